"""Worker middleware: log context, a session per message, durable failure records, the ledger relay,
the batch threads, the paused-queues view and the per-minute throughput counters."""

from __future__ import annotations

import threading
from typing import Any

import structlog
from dramatiq import Broker, Middleware, Retry
from dramatiq.broker import MessageProxy
from sqlalchemy.dialects.postgresql import insert

from app.adapters.queue_throughput import ThroughputCounters
from app.db import UnitOfWork
from app.logging import get_logger
from app.services.failed_jobs import failed_job_row
from app.services.queue_pauses import PausedQueues
from app.settings import Settings
from models import FailedJob
from workers import context
from workers.ledger import OUTCOME_OPTION

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
                uow.end()  # the rollback is a no-op after a commit; it undoes a failed job's changes
            finally:
                context.set_unit_of_work(None)

    after_skip_message = after_process_message

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # After the worker threads and the relay have stopped: closing before would leave running
        # jobs on a disposed engine and let them open a fresh set of clients nobody closes.
        from workers.resources import close_resources

        close_resources()


class FailedJobRecorder(Middleware):
    """Records every message that failed for good in `failed_jobs`, once per message id.

    Ledger messages are recorded by `workers.ledger.LedgerRetries`, in the transaction that marks
    their row failed; this records the others (and a ledger message PostgreSQL could not settle).
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
        if exception is not None and message.failed and OUTCOME_OPTION not in message.options:
            started = getattr(self._runs_before, "value", None)
            attempts = started[1] + 1 if started and started[0] == message.message_id else None
            self._record(message, exception, attempts=attempts)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.failed and OUTCOME_OPTION not in message.options:  # refused before running (AgeLimit)
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


class LedgerRelayMiddleware(Middleware):
    """Runs the ledger relay thread inside every worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._relay: Any = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        from workers.relay import LedgerRelay

        self._relay = LedgerRelay(broker, self.settings)  # type: ignore[arg-type]
        self._relay.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._relay is not None:
            self._relay.stop()


class BatchesMiddleware(Middleware):
    """Runs the batch threads (`workers/batches.py`) in every worker process that serves their
    queue: the dispatcher (`dispatch`, unless `DISPATCH_BATCHED` is off) and the notification
    sender (`notifications`, unless `NOTIFY_BATCHED` is off)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._threads: list[Any] = []

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        from app.keys import QUEUE_DISPATCH, QUEUE_NOTIFICATIONS
        from workers.dispatcher import Dispatcher
        from workers.metrics import JobMetrics
        from workers.notifier import Notifier

        whitelist = getattr(worker, "consumer_whitelist", None)
        metrics = next((m for m in broker.middleware if isinstance(m, JobMetrics)), None)
        series = metrics._ensure_series() if metrics is not None else None

        def actor_options(name: str) -> dict[str, Any]:
            return dict(broker.get_actor(name).options) if name in broker.actors else {}

        dispatch, notifications = self.settings.dispatch, self.settings.notifications
        runners = ((Dispatcher, QUEUE_DISPATCH, dispatch.batched, dispatch.threads),
                   (Notifier, QUEUE_NOTIFICATIONS, notifications.batched, 1))
        paused = getattr(broker, "paused_queues", None)
        throughput = _throughput()
        for runner, queue, enabled, count in runners:
            if enabled and (not whitelist or queue in whitelist):
                for _ in range(count):
                    thread = runner(self.settings, actor_options=actor_options, series=series,
                                    paused=paused, throughput=throughput)
                    thread.start()
                    self._threads.append(thread)

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        for thread in self._threads:
            thread.stop()
        self._threads.clear()


class QueuePausesView(Middleware):
    """Gives the worker process its `PausedQueues` (`app.services.queue_pauses`) before its consumers
    and batch threads start; they read it on every fetch and claim (a set lookup)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._view: PausedQueues | None = None

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        from app.db import libpq_dsn

        self._view = PausedQueues(libpq_dsn(self.settings.db.unpooled_url))
        self._view.start()
        broker.paused_queues = self._view  # type: ignore[attr-defined]

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._view is not None:
            self._view.stop()
            self._view = None
        broker.paused_queues = None  # type: ignore[attr-defined]


def _throughput() -> ThroughputCounters:
    from workers.resources import get_resources

    resources = get_resources()
    return ThroughputCounters(resources.redis, resources.keys)


class QueueThroughput(Middleware):
    """Counts every Dramatiq message that ends in its queue's minute (`ThroughputCounters`): one
    pipelined write per message, after it ran."""

    def __init__(self) -> None:
        self._counters: ThroughputCounters | None = None

    def _add(self, queue: str, *, failed: bool) -> None:
        if self._counters is None:
            self._counters = _throughput()
        self._counters.add(queue, finished=1, failed=int(failed))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        # An expected wait (`Retry`, a ledger deferral) ended the run without a failure.
        failed = (exception is not None and not isinstance(exception, Retry)
                  and message.options.get(OUTCOME_OPTION) != "deferred")
        self._add(message.queue_name, failed=failed)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._add(message.queue_name, failed=bool(message.failed))

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._counters = None  # its client is the worker's resources', closed with them
