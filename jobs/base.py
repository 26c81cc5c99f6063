"""`@job`: declares a Dramatiq actor whose unit of work commits when the function returns.

The worker middleware opens a session for each message; the wrapper passes it to the job as a
`JobContext`, commits, then runs the after-commit actions (emits, follow-up enqueues). Any
exception rolls back and goes to the retry policy. Actors take ids and JSON primitives only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage

from app.adapters.realtime import Publisher
from app.db import UnitOfWork
from app.keys import RedisKeys
from app.settings import Settings
from workers.broker import broker
from workers.context import current_unit_of_work
from workers.resources import get_resources

P = ParamSpec("P")


@dataclass(frozen=True)
class JobContext:
    uow: UnitOfWork
    settings: Settings
    redis: redis.Redis
    keys: RedisKeys
    publisher: Publisher
    message_id: str


def job(
    name: str, *, queue: str, max_retries: int = 10, min_backoff_ms: int = 1_000,
    max_backoff_ms: int = 15 * 60 * 1000, time_limit_ms: int = 60_000, **options: Any,
) -> Callable[[Callable[..., None]], dramatiq.Actor[..., None]]:
    def decorator(fn: Callable[..., None]) -> dramatiq.Actor[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            resources = get_resources()
            message = CurrentMessage.get_current_message()
            uow = current_unit_of_work()
            ctx = JobContext(uow=uow, settings=resources.settings, redis=resources.redis,
                             keys=resources.keys, publisher=resources.publisher,
                             message_id=message.message_id if message else "")
            fn(ctx, *args, **kwargs)
            uow.commit()

        declare = dramatiq.actor(
            actor_name=name, queue_name=queue, broker=broker, max_retries=max_retries,
            min_backoff=min_backoff_ms, max_backoff=max_backoff_ms, time_limit=time_limit_ms, **options,
        )
        return declare(run)

    return decorator
