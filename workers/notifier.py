"""The notification sender: `notifications.send` in batches, straight from the job ledger.

Every worker process that serves the `notifications` queue runs one sender thread (a
`workers.batches.LedgerBatches`). A batch:

1. claims up to `NOTIFY_BATCH_SIZE` due `notifications.send` rows of the ledger (committed at once:
   they are this thread's for the lease);
2. sends them with `app.services.notification_delivery.deliver_many`: one statement claims the
   notifications (`queued → sending`, durable before any provider call), a pool of
   `NOTIFY_SEND_CONCURRENCY` threads sends them (the Twilio SDK blocks on each HTTP call), one
   statement records every accepted one;
3. marks done the jobs whose notification was sent, failed for good or was not ours to send, and
   settles the others on their rows (a transient error: retried after the actor's backoff).

While Twilio's circuit is open nothing is claimed from Twilio: the jobs wait, due when the pause
ends, without spending an attempt; half-open, one notification goes alone as the trial.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from app.adapters.circuit import HALF_OPEN
from app.adapters.twilio_sender import senders_for
from app.errors import CircuitOpen, ProviderError
from app.keys import NOTIFICATION_ACTORS, NOTIFICATIONS_CHANNEL, QUEUE_NOTIFICATIONS
from app.logging import get_logger
from app.services.notification_delivery import deliver_many
from workers import ledger
from workers.batches import LedgerBatches, is_outage

log = get_logger("workers.notifier")


class Notifier(LedgerBatches):
    """One per worker process serving the `notifications` queue (`BatchesMiddleware`)."""

    actors: ClassVar[tuple[str, ...]] = NOTIFICATION_ACTORS
    channel: ClassVar[str] = NOTIFICATIONS_CHANNEL
    queue: ClassVar[str] = QUEUE_NOTIFICATIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: ThreadPoolExecutor | None = None

    def batch_size(self) -> int:
        return self.jobs_settings.notifications.batch_size

    def _senders_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.jobs_settings.notifications.send_concurrency,
                                            thread_name_prefix="notify-send")
        return self._pool

    def stop(self) -> None:
        super().stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run_batch(self) -> int:
        settings = self.jobs_settings
        senders = senders_for(settings.twilio)
        circuit = senders.circuit
        # Half-open, one notification goes alone as the trial; open, a whole batch waits for the pause.
        limit = 1 if circuit is not None and circuit.state == HALF_OPEN else self.batch_size()
        with self.resources.sessions.begin() as session:
            jobs = self.claim(session, limit)
        if not jobs:
            return 0
        started = time.perf_counter()
        wanted: dict[uuid.UUID, list[Any]] = {}
        for job in jobs:
            try:
                wanted.setdefault(uuid.UUID(str(job.args[0])), []).append(job)
            except (ValueError, IndexError, TypeError) as error:
                self.settle(job, error)
        if circuit is not None:
            try:
                circuit.guard()
            except CircuitOpen as paused:
                self._defer([job for group in wanted.values() for job in group], paused)
                return len(jobs)
        try:
            with self.resources.sessions() as session:
                results = deliver_many(session, senders, settings.twilio, settings.notifications,
                                       list(wanted), run_all=self._senders_pool().map)
        except Exception as error:
            if is_outage(error):
                raise  # the jobs stay handed; their lease brings them back
            for group in wanted.values():
                for job in group:
                    self.settle(job, error)
            return len(jobs)
        done: list[int] = []
        for notification_id, result in results.items():
            for job in wanted[notification_id]:
                if isinstance(result, ProviderError):
                    self.settle(job, result, log_traceback=False)
                else:
                    done.append(job.id)
        self.mark_done(done)
        self.tally(len(done))
        self.count(jobs, time.perf_counter() - started)
        return len(jobs)

    def _defer(self, jobs: list[Any], paused: CircuitOpen) -> None:
        due_at = datetime.now(UTC) + timedelta(seconds=max(paused.retry_after_s, 0.1))
        with self.resources.sessions.begin() as session:
            for job in jobs:
                ledger.defer(session, str(job.message_id), due_at=due_at, reason=paused.message)
        log.info("job.deferred", actor=NOTIFICATION_ACTORS[0], jobs=len(jobs), reason=paused.message)
