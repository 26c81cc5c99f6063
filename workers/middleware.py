"""Worker middleware: log context, a session per message, durable failure records, outbox relay."""

from __future__ import annotations

import threading
import traceback
from datetime import UTC, datetime
from typing import Any

import structlog
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries
from sqlalchemy.dialects.postgresql import insert

from app.db import UnitOfWork
from app.logging import get_logger
from app.settings import Settings
from models import FailedJob
from workers import context

log = get_logger("workers")


class LogContext(Middleware):
    """Binds `message_id`, `actor` and `queue` to every log event of the job."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        structlog.contextvars.bind_contextvars(
            message_id=message.message_id, actor=message.actor_name, queue=message.queue_name
        )

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.unbind_contextvars("message_id", "actor", "queue")

    after_skip_message = after_process_message


class SessionPerMessage(Middleware):
    """Opens a unit of work for each message; the job wrapper commits it, this closes it.

    The commit happens inside the actor call (see `jobs.base.job`), so a failed commit raises into
    the retry path instead of being swallowed by a middleware hook.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        from workers.resources import get_resources

        context.set_unit_of_work(UnitOfWork(get_resources().sessions()))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        uow = context.peek_unit_of_work()
        if uow is not None:
            try:
                uow.rollback()  # a no-op after a commit; undoes a failed job's changes
            finally:
                uow.close()
                context.set_unit_of_work(None)

    after_skip_message = after_process_message

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # After the worker threads and the relay have stopped: closing before would leave running
        # jobs on a disposed engine and let them open a fresh set of clients nobody closes.
        from workers.resources import close_resources

        close_resources()


class DurableRetries(Retries):
    """Retries that fail the message when the retry itself cannot be enqueued.

    Dramatiq acks the original even when enqueueing its retry fails, losing it silently; failing
    it instead lets `FailedJobRecorder` keep it in PostgreSQL for replay.
    """

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        try:
            super().after_process_message(broker, message, result=result, exception=exception)
        except Exception as enqueue_error:
            log.error("job.retry_enqueue_failed", error=repr(enqueue_error))
            message.fail()


class FailedJobRecorder(Middleware):
    """Records every message that failed for good in `failed_jobs`, once per message id.

    If PostgreSQL can't take the record, the message is still dead-lettered in Redis by the
    broker, from where `farmctl jobs failed --import-dead-letters` brings it back.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runs_before = threading.local()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        # `Retries` counts a failed run in `options["retries"]`, except one that raised an
        # exception listed in `throws=`: remember the count this run started from.
        self._runs_before.value = (message.message_id, int(message.options.get("retries", 0)))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is not None and message.failed:
            started = getattr(self._runs_before, "value", None)
            attempts = started[1] + 1 if started and started[0] == message.message_id else None
            self._record(message, exception, attempts=attempts)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.failed:  # refused before running (e.g. by AgeLimit): this try isn't a run
            self._record(message, message._exception or RuntimeError("message skipped"),
                         attempts=int(message.options.get("retries", 0)))

    def _record(self, message: MessageProxy, exception: BaseException, *,
                attempts: int | None) -> None:
        from workers.resources import get_resources

        row = failed_job_row(message.message_id, message.queue_name, message.actor_name,
                             list(message.args), dict(message.kwargs), dict(message.options),
                             exception, message.message_timestamp, source="worker",
                             attempts=attempts)
        try:
            with get_resources().sessions.begin() as session:
                session.execute(insert(FailedJob).values(**row).on_conflict_do_nothing(
                    index_elements=["message_id"]))
            log.error("job.failed_permanently", attempts=row["attempts"], exception=row["exception_type"])
        except Exception as record_error:
            log.critical("job.failure_not_recorded", error=repr(record_error),
                         hint="the message stays in the Redis dead-letter queue")


def failed_job_row(
    message_id: str,
    queue: str,
    actor: str,
    args: list[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    exception: BaseException | None,
    message_timestamp: int | None,
    *,
    source: str,
    traceback_text: str | None = None,
    attempts: int | None = None,
) -> dict[str, Any]:
    """The `failed_jobs` row for one message (shared by the recorder and the dead-letter import).

    `attempts` is how many times the actor ran. Without it, it is derived from the message as last
    enqueued (a dead letter): `Retries` enqueues run n+1 with `retries` = n, so that plus one.
    """
    options = {k: v for k, v in options.items() if k != "traceback"}
    if exception is not None:
        tb = "".join(traceback.format_exception(exception))
        exc_type = f"{type(exception).__module__}.{type(exception).__qualname__}"
        exc_message = str(exception)
    else:
        tb = traceback_text or ""
        exc_type, exc_message = "unknown", "no exception was recorded with the message"
    enqueued_at = (
        datetime.fromtimestamp(message_timestamp / 1000, UTC) if message_timestamp else None
    )
    return {
        "message_id": message_id,
        "queue": queue.removesuffix(".DQ").removesuffix(".XQ"),
        "actor": actor,
        "args": args,
        "kwargs": kwargs,
        "options": options,
        "exception_type": exc_type[:200],
        "exception_message": exc_message,
        "traceback": tb,
        "attempts": attempts if attempts is not None else int(options.get("retries", 0)) + 1,
        "enqueued_at": enqueued_at,
        "source": source,
    }


class OutboxRelayMiddleware(Middleware):
    """Runs the outbox relay thread inside every worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._relay: Any = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        from workers.relay import OutboxRelay

        self._relay = OutboxRelay(broker, self.settings)
        self._relay.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._relay is not None:
            self._relay.stop()
