"""The worker side of the durable job ledger (`models.Job`): what a run does to its row.

A message handed over by the relay carries the `ledger` option. Its run is tied to its row:

- **Claim** (`claim`, the first statement of the job's transaction): the row becomes `done` in the
  same transaction as the job's effect, so "done" and the effect commit together or not at all; a
  second delivery of the message (a re-hand, a redelivery after a crash) finds it done and skips;
  one running meanwhile waits on the row lock and then skips. Jobs that must run on every delivery
  (`@job(claim_first=False)`: a service that commits step by step, or one that re-sends what a
  crash after its commit lost) mark it at the end instead (`finish`) and rely on their own
  compare-and-set.
- **A failed run** (`LedgerRetries`): the row goes back to `waiting`, due after the actor's backoff,
  in PostgreSQL — no retry lives in Redis or in a worker's memory, so a retry survives a Redis
  restart and can't be lost by a failed enqueue. Out of retries (or refused by `retry_when`), the
  row becomes `failed` and its `failed_jobs` record is written in the same transaction.
- **Deferred** (a provider's circuit is open): back to `waiting` until the circuit may close,
  without spending a retry.

If PostgreSQL can't take a failed run's new state, the message falls back to Dramatiq's own retry
in Redis *and* its row stays `handed`, so the relay hands it again when its lease ends: retried
either way, acting once (`claim`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import dramatiq
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Retries
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.errors import CircuitOpen, ProviderError
from app.logging import get_logger
from app.services.failed_jobs import failed_job_row
from models import FailedJob

log = get_logger("workers.ledger")

#: The message option the relay sets on every message it hands over (value: the row's id).
LEDGER_OPTION: Final = "ledger"
#: Set on a ledger message once its failed run was settled in PostgreSQL: retry, defer or failed.
OUTCOME_OPTION: Final = "ledger_outcome"

_LIVE = "state IN ('waiting', 'handed')"

_CLAIM = text(f"""
UPDATE jobs SET state = 'done', finished_at = now(), lease_until = NULL
WHERE message_id = :message_id AND {_LIVE}
RETURNING id
""")

_FAILED_RUN = text(f"""
UPDATE jobs SET attempts = attempts + 1, last_error = :error
WHERE message_id = :message_id AND {_LIVE}
RETURNING attempts
""")

_WAIT = text(f"""
UPDATE jobs SET state = 'waiting', due_at = :due_at, lease_until = NULL, redis_message_id = NULL,
                last_error = COALESCE(:error, last_error)
WHERE message_id = :message_id AND {_LIVE}
""")

_FAIL = text(f"""
UPDATE jobs SET state = 'failed', finished_at = now(), lease_until = NULL
WHERE message_id = :message_id AND {_LIVE}
""")


def is_ledger(message: dramatiq.Message[Any] | MessageProxy) -> bool:
    return bool(message.options.get(LEDGER_OPTION))


def claim(session: Session, message_id: str) -> bool:
    """Mark the job done in the session's transaction; False if it already ran (or failed for good)."""
    return session.execute(_CLAIM, {"message_id": message_id}).first() is not None


finish = claim  # the same statement, run last by `claim_first=False` jobs


def settle_failure(session: Session, *, message_id: str, queue: str, actor: str, args: list[Any],
                   kwargs: dict[str, Any], options: dict[str, Any], created_ms: int, exception: BaseException,
                   max_retries: int, min_backoff_ms: int, max_backoff_ms: int) -> str:
    """A failed run of a job run without a Dramatiq message (the dispatcher's batches): its row
    waits for the next try after the backoff, or — out of retries — fails with its `failed_jobs`
    record. Returns "retry", "failed" or "finished" (the row had already finished)."""
    row = session.execute(_FAILED_RUN, {"message_id": message_id, "error": _error_text(exception)}).first()
    if row is None:
        return "finished"
    attempts = int(row[0])
    if attempts > max_retries:
        session.execute(_FAIL, {"message_id": message_id})
        record = failed_job_row(message_id, queue, actor, args, kwargs, options, exception, created_ms,
                                source="worker", attempts=attempts)
        session.execute(insert(FailedJob).values(**record).on_conflict_do_nothing(index_elements=["message_id"]))
        log.error("job.failed_permanently", actor=actor, attempts=attempts,
                  exception=record["exception_type"], error=str(exception)[:500])
        return "failed"
    _, delay = compute_backoff(attempts - 1, factor=min_backoff_ms, max_backoff=max_backoff_ms)
    session.execute(_WAIT, {"message_id": message_id, "error": None,
                            "due_at": datetime.now(UTC) + timedelta(milliseconds=int(delay))})
    log.info("job.retry_scheduled", actor=actor, attempt=attempts, delay_ms=int(delay))
    return "retry"


def defer(session: Session, message_id: str, *, due_at: datetime, reason: str) -> None:
    """Back to waiting until `due_at` without spending an attempt (a provider's circuit is open)."""
    session.execute(_WAIT, {"message_id": message_id, "error": reason, "due_at": due_at})


# --- failed runs ---------------------------------------------------------------------------------
class Deferred(dramatiq.Retry):
    """A run that didn't start its work because a provider is known to be down (circuit open)."""

    def __init__(self, delay_ms: int, reason: str) -> None:
        super().__init__(reason, delay=delay_ms)
        self.reason = reason


class ExpectedFailure(dramatiq.Retry):
    """A provider error (timeout, refused connection, 5xx, 429, a refusal): logged as one line by the
    job wrapper, never with a traceback; `error` is what the provider said."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.message)
        self.error = error


def translate(error: Exception) -> Exception:
    """The exception a job run ends with, as the worker should see it (see `jobs.base.job`)."""
    if isinstance(error, CircuitOpen):
        return Deferred(int(error.retry_after_s * 1000), error.message)
    if isinstance(error, ProviderError):
        return ExpectedFailure(error)
    return error


def _cause(exception: BaseException) -> BaseException:
    return exception.error if isinstance(exception, ExpectedFailure) else exception


def _error_text(exception: BaseException) -> str:
    cause = _cause(exception)
    return f"{type(cause).__name__}: {cause}"[:2000]


class LedgerRetries(Retries):
    """Retries in PostgreSQL for ledger messages (see the module docstring); Dramatiq's own retries
    for any other message (sent straight to Redis), failing it if even that enqueue fails."""

    def __init__(self, sessions: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self._sessions = sessions

    def sessions(self) -> Any:
        if self._sessions is None:
            from workers.resources import get_resources

            return get_resources().sessions
        return self._sessions

    def after_process_message(self, broker: Broker, message: MessageProxy, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        if exception is None:
            return
        if is_ledger(message):
            try:
                message.options[OUTCOME_OPTION] = self._settle(broker, message, exception)
                return
            except Exception as error:  # PostgreSQL away: Redis retries it, the lease re-hands it too
                log.error("job.ledger_unreachable", error=repr(error))
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception as enqueue_error:
            # Dramatiq acks the original when its retry can't be enqueued: fail it instead, so
            # `FailedJobRecorder` keeps it (and a ledger row is still handed again at its lease).
            log.error("job.retry_enqueue_failed", error=repr(enqueue_error))
            message.fail()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if is_ledger(message) and message.failed:  # refused before running (e.g. by AgeLimit)
            error = message._exception or RuntimeError("message skipped")
            with self.sessions().begin() as session:
                self._record_failure(session, message, error, attempts=None)
            message.options[OUTCOME_OPTION] = "failed"

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """A ledger message rejected without a run settled here (Dramatiq dead-letters a message for
        an actor this worker doesn't declare): fail its row with a record, or the lease check would
        hand it over again forever."""
        if not is_ledger(message) or OUTCOME_OPTION in message.options:
            return
        error = message._exception or RuntimeError("rejected by the worker")
        try:
            with self.sessions().begin() as session:
                session.execute(_FAILED_RUN, {"message_id": message.message_id, "error": _error_text(error)})
                self._record_failure(session, message, error, attempts=None)
        except Exception as record_error:  # its dead letter stays in Redis, importable
            log.critical("job.failure_not_recorded", error=repr(record_error))

    def _settle(self, broker: Broker, message: MessageProxy, exception: BaseException) -> str:
        now = datetime.now(UTC)
        with self.sessions().begin() as session:
            if isinstance(exception, Deferred):
                session.execute(_WAIT, {"message_id": message.message_id, "error": exception.reason,
                                        "due_at": now + timedelta(milliseconds=exception.delay or 1000)})
                log.info("job.deferred", delay_ms=exception.delay, reason=exception.reason)
                return "deferred"
            row = session.execute(_FAILED_RUN, {"message_id": message.message_id,
                                                "error": _error_text(exception)}).first()
            if row is None:
                log.info("job.failed_run_of_finished_job")
                return "finished"
            attempts = int(row[0])
            try:
                actor = broker.get_actor(message.actor_name)
            except ActorNotFound:  # renamed or removed: no retry can help; keep it for a replay
                self._record_failure(session, message, exception, attempts=attempts)
                return "failed"
            if self._gives_up(actor, message, attempts - 1, _cause(exception)):
                self._record_failure(session, message, exception, attempts=attempts)
                return "failed"
            delay = self._backoff(actor, message, attempts - 1, exception)
            session.execute(_WAIT, {"message_id": message.message_id, "error": None,
                                    "due_at": now + timedelta(milliseconds=delay)})
            log.info("job.retry_scheduled", attempt=attempts, delay_ms=delay)
            return "retry"

    def _gives_up(self, actor: Any, message: MessageProxy, retries: int, cause: BaseException) -> bool:
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(cause, throws):
            return True
        retry_when = actor.options.get("retry_when", self.retry_when)
        if retry_when is not None:
            return not retry_when(retries, cause)
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        return max_retries is not None and retries >= max_retries

    def _backoff(self, actor: Any, message: MessageProxy, retries: int, exception: BaseException) -> int:
        if isinstance(exception, dramatiq.Retry) and exception.delay is not None:
            return int(exception.delay)
        min_backoff = message.options.get("min_backoff", actor.options.get("min_backoff", self.min_backoff))
        max_backoff = message.options.get("max_backoff", actor.options.get("max_backoff", self.max_backoff))
        _, delay = compute_backoff(retries, factor=min_backoff, max_backoff=max_backoff)
        return int(delay)

    def _record_failure(self, session: Session, message: MessageProxy, exception: BaseException, *,
                        attempts: int | None) -> None:
        session.execute(_FAIL, {"message_id": message.message_id})
        cause = _cause(exception)
        row = failed_job_row(message.message_id, message.queue_name, message.actor_name, list(message.args),
                             dict(message.kwargs), dict(message.options), cause,
                             message.message_timestamp, source="worker", attempts=attempts)
        session.execute(insert(FailedJob).values(**row).on_conflict_do_nothing(index_elements=["message_id"]))
        log.error("job.failed_permanently", attempts=row["attempts"], exception=row["exception_type"],
                  error=str(cause)[:500])
