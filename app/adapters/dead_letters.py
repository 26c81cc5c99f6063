"""Dramatiq's dead-letter queues in Redis, read and emptied for the failed-job registry
(`app/services/failed_jobs.py` imports them; `farmctl jobs import-dead-letters`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
import redis
import redis.asyncio as aredis


class DeadLetterEraser(Protocol):
    """What the registry needs to drop dead letters it now tracks (sync, or async for the web)."""

    def forget(self, queue: str, redis_ids: Sequence[str]) -> Any: ...


@dataclass(frozen=True)
class DeadLetter:
    redis_id: str
    #: None when the stored data can't be decoded as a Dramatiq message.
    message: dramatiq.Message[Any] | None


class DeadLetters:
    """Dramatiq's dead-letter queues in Redis: `<ns>:<q>.XQ` (ids by death time) and `<ns>:<q>.XQ.msgs`."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._redis = client
        self._ns = namespace

    def _key(self, queue: str) -> str:
        return f"{self._ns}:{queue}.XQ"

    def count(self, queue: str) -> int:
        return int(self._redis.zcard(self._key(queue)))

    def ids(self, queue: str) -> list[str]:
        """Every dead letter of the queue, oldest death first."""
        raw: list[bytes | str] = self._redis.zrange(self._key(queue), 0, -1)  # type: ignore[assignment]
        return [item.decode() if isinstance(item, bytes) else item for item in raw]

    def read(self, queue: str, redis_ids: Sequence[str]) -> list[DeadLetter]:
        if not redis_ids:
            return []
        data: list[bytes | str | None] = self._redis.hmget(
            f"{self._key(queue)}.msgs", list(redis_ids))
        letters = []
        for redis_id, raw in zip(redis_ids, data, strict=True):
            try:
                message = dramatiq.Message.decode(raw if isinstance(raw, bytes) else raw.encode()) \
                    if raw is not None else None
            except Exception:  # a corrupt entry is reported and left where it is
                message = None
            letters.append(DeadLetter(redis_id=redis_id, message=message))
        return letters

    def forget(self, queue: str, redis_ids: Sequence[str]) -> None:
        if not redis_ids:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._key(queue), *redis_ids)
        pipe.hdel(f"{self._key(queue)}.msgs", *redis_ids)
        pipe.execute()


class AsyncDeadLetterEraser:
    """`DeadLetters.forget` for the web process (its async client): run as an after-commit action."""

    def __init__(self, client: aredis.Redis, namespace: str) -> None:
        self._redis = client
        self._ns = namespace

    async def forget(self, queue: str, redis_ids: Sequence[str]) -> None:
        if not redis_ids:
            return
        key = f"{self._ns}:{queue}.XQ"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(key, *redis_ids)
            pipe.hdel(f"{key}.msgs", *redis_ids)
            await pipe.execute()
