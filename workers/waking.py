"""A Redis broker whose consumers wake on work instead of polling on a timer.

Dramatiq's Redis consumer finds its queue empty, sleeps (backing off up to the worker timeout) and
asks again: after a quiet spell the first job waits up to that timeout before it starts. Here a
consumer that found nothing waits on a wake-up list of its queue (`<ns>:<queue>.wake`, `BLPOP`
with the same timeout) and the relay, having handed jobs to a queue, pushes a token for each (at
most `MAX_TOKENS`): a consumer waiting for work starts fetching within a Redis round trip of the
hand-over. Nothing depends on the tokens — a lost or missing one costs at most the old timeout,
a spare one a single empty fetch — so messages enqueued some other way (a `send()`, a Dramatiq
retry) are still found as before.

A consumer of a paused queue (`app.services.queue_pauses`: the broker's `paused_queues`, an
in-memory set) fetches nothing: it gives back what it had prefetched and waits, up to the same
timeout, for the set to change, returning None like an empty fetch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed

from app.services.queue_pauses import PausedQueues

#: At most this many tokens wait on a queue's wake-up list (one wakes one waiting consumer).
MAX_TOKENS: Final = 64
#: A wake-up list nobody waited on is gone after this long (s).
TOKEN_TTL_S: Final = 60


class WakingConsumer(_RedisConsumer):
    broker: WakingRedisBroker

    def __next__(self) -> Any:
        paused = self.broker.paused_queues
        if paused is not None and paused.is_paused(self.queue_name):
            self._give_back()
            paused.wait_for_change(self.timeout / 1000)
            self.misses = 0
            return None
        # After an empty fetch (misses > 0), wait for a token (or the timeout) instead of sleeping,
        # then return None as the sleep does: the worker's consumer thread checks whether it was
        # asked to stop before the next call fetches (a fetch after a stop would leave its messages
        # in this worker's acks until its heartbeat expires).
        if self.misses and not self.message_cache and self.outstanding_message_count < self.prefetch:
            try:
                self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=self.timeout / 1000)
            except redis.ConnectionError as error:
                raise ConnectionClosed(error) from None
            self.misses = 0
            return None
        return super().__next__()

    def _give_back(self) -> None:
        """Requeue what was fetched but never handed to a worker thread: Dramatiq's consumer would
        leave it in this worker's acks, to run only once the worker's heartbeat has expired."""
        if not self.message_cache:
            return
        cached = [MessageProxy(Message.decode(data)) for data in self.message_cache if data is not None]
        self.message_cache = []
        if cached:
            with contextlib.suppress(redis.RedisError):  # Redis away: the heartbeat recovery then
                self.requeue(cached)

    def close(self) -> None:
        self._give_back()
        super().close()


class WakingRedisBroker(RedisBroker):
    #: This worker process's view of the paused queues (set while a worker runs: `QueuePausesView`).
    paused_queues: PausedQueues | None = None

    @property
    def consumer_class(self) -> type[WakingConsumer]:
        return WakingConsumer

    def wake_key(self, queue: str) -> str:
        return f"{self.namespace}:{queue}.wake"

    def wake(self, handed: Mapping[str, int]) -> None:
        """Wake up to `count` consumers of each queue: jobs were just handed to it."""
        if not handed:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue, count in handed.items():
            key = self.wake_key(queue)
            pipe.lpush(key, *["1"] * max(1, min(count, MAX_TOKENS)))
            pipe.ltrim(key, 0, MAX_TOKENS - 1)
            pipe.expire(key, TOKEN_TTL_S)
        pipe.execute()
