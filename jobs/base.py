"""`@job`: declares a Dramatiq actor whose unit of work commits when the function returns.

The worker middleware opens a session for each message; the wrapper passes it to the job as a
`JobContext`, commits, then runs the after-commit actions (emits, follow-up enqueues). Any
exception rolls back and goes to the retry policy. Actors take ids and JSON primitives only.

A message handed over from the durable ledger is claimed first, in the same transaction
(`workers.ledger.claim`): its row becomes done exactly when the job's effect commits, and a second
delivery finds it done and does nothing. A job declared `claim_first=False` runs on every delivery
and its row is marked done after it returns: for jobs idempotent by their own compare-and-set
whose second delivery has work to do — one whose service commits step by step (a notification's
claim made durable before the provider call), or one that re-sends what a crash between its
commit and its after-commit emits lost (a dispatch round's offers).

A provider error ends the run as one log line (`job.provider_error`) and is retried by the
policy; a paused provider (`CircuitOpen`) defers the job without spending a retry. Tracebacks are
for bugs.
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
from app.db import UnitOfWork, committed
from app.errors import CircuitOpen, ProviderError
from app.keys import JobKind, RedisKeys
from app.logging import get_logger
from app.settings import Settings
from workers import ledger
from workers.broker import broker
from workers.context import current_unit_of_work
from workers.resources import get_resources

P = ParamSpec("P")

log = get_logger("jobs")


@dataclass(frozen=True)
class JobContext:
    uow: UnitOfWork
    settings: Settings
    redis: redis.Redis
    keys: RedisKeys
    publisher: Publisher
    message_id: str


def _provider_code(error: ProviderError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return str(details.get("code") or error.code)


def job(
    kind: JobKind | str, *, queue: str | None = None, max_retries: int = 10, min_backoff_ms: int = 1_000,
    max_backoff_ms: int = 15 * 60 * 1000, time_limit_ms: int = 60_000, claim_first: bool = True,
    **options: Any,
) -> Callable[[Callable[..., None]], dramatiq.Actor[..., None]]:
    """Declare `fn` as the actor of `kind` (a constant of `app/keys.py`); a one-off actor (a test's
    probe) gives its name and `queue` instead."""
    name, queue = kind if isinstance(kind, JobKind) else (kind, queue)
    assert queue is not None, "an actor named by a string needs its queue"

    def decorator(fn: Callable[..., None]) -> dramatiq.Actor[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            resources = get_resources()
            message = CurrentMessage.get_current_message()
            uow = current_unit_of_work()
            message_id = message.message_id if message else ""
            in_ledger = message is not None and ledger.is_ledger(message)
            if in_ledger and claim_first and not ledger.claim(uow.session, message_id):
                log.info("job.already_done")
                return
            ctx = JobContext(uow=uow, settings=resources.settings, redis=resources.redis,
                             keys=resources.keys, publisher=resources.publisher, message_id=message_id)
            try:
                with committed(uow):  # any exception rolls back (the middleware closes the session)
                    fn(ctx, *args, **kwargs)
                    if in_ledger and not claim_first:
                        ledger.finish(uow.session, message_id)
            except ProviderError as error:
                # Rolled back first: the retry policy writes to this job's row, which the claim locked.
                if not isinstance(error, CircuitOpen) and not error.logged:
                    log.warning("job.provider_error", code=_provider_code(error), transient=error.transient,
                                error=error.message)
                raise ledger.translate(error) from error

        declare = dramatiq.actor(
            actor_name=name, queue_name=queue, broker=broker, max_retries=max_retries,
            min_backoff=min_backoff_ms, max_backoff=max_backoff_ms, time_limit=time_limit_ms, **options,
        )
        return declare(run)

    return decorator
