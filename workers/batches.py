"""Ledger rows run in batches by a thread of the worker process, not one Dramatiq message each.

The farm's two high-volume jobs — dispatch rounds and bid checks (`workers/dispatcher.py`) and
notification sends (`workers/notifier.py`) — cost more in per-message overhead (fetch and ack
scripts, a session, a commit, a pipeline) than in work when handed to Redis one message per job.
Their ledger rows are instead claimed many at a time by a `LedgerBatches` thread in each worker
process that serves their queue; the relay leaves them alone (`batched_actors`).

What every such thread shares, here:

- **Claim**: up to a batch of due rows become `handed` (a lease, no Redis id) with `FOR UPDATE
  SKIP LOCKED`, so the threads of any number of processes share the work. A row is marked `done`
  only after the batch's effects and emits (`mark_done`); a crash before that leaves it `handed`,
  and when its lease lapses the relay finds no Redis message for it and puts it back to waiting:
  the job runs again and acts once (each job's own compare-and-set).
- **Failures**: PostgreSQL or Redis unreachable (`is_outage`) rolls the batch back and spends
  nothing: the thread logs once and tries again every second. A job that fails is settled on its
  row like any ledger job (`settle`: retried after its actor's backoff; out of retries, failed and
  recorded in `failed_jobs` for the CLI to replay).
- **Pauses**: while an operator has paused the thread's `queue` (`app.services.queue_pauses`:
  the worker's `PausedQueues`, an in-memory set) it claims nothing and looks again every
  `STOP_CHECK_S`; its rows wait in the ledger.
- **Throughput**: each batch is counted in its queue's minute (`ThroughputCounters`), each failed
  job too, for the operators' last hour.
- **Waking**: the thread sleeps on `LISTEN <channel>` (the jobs trigger notifies when one of its
  rows becomes waiting) until the next row is due, so a new job starts within a millisecond or two
  of the commit that wrote it. Under load, rows pile up while a batch runs and the next batch takes
  them all: the busier the farm, the more each job's fixed cost is shared.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Final

import psycopg
import redis
from sqlalchemy import TextClause, text
from sqlalchemy import exc as sa_exc

from app.adapters.queue_throughput import ThroughputCounters
from app.db import libpq_dsn
from app.keys import actors_sql, batched_actors
from app.logging import get_logger
from app.services.queue_pauses import PausedQueues
from app.settings import Settings
from workers import ledger
from workers.in_progress import TALLY

log = get_logger("workers.batches")

__all__ = ["LedgerBatches", "actors_sql", "batched_actors", "is_outage"]

#: How often a thread waiting for a notification checks whether it was asked to stop (s).
STOP_CHECK_S: Final = 0.25
#: How long a thread waits after PostgreSQL or Redis could not be reached (s).
OUTAGE_WAIT_S: Final = 1.0

#: Errors that mean PostgreSQL or Redis is away, not that a job is wrong: nothing is spent on them.
_OUTAGES = (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError, sa_exc.OperationalError,
            sa_exc.InterfaceError)


def is_outage(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _OUTAGES)


_DONE = text("""
UPDATE jobs SET state = 'done', finished_at = now(), lease_until = NULL
WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'handed'
""")

_HANDED = """UPDATE jobs SET state = 'handed', handed_at = now(), epoch = NULL, redis_message_id = NULL,
                lease_until = now() + make_interval(secs => :lease_s)"""
_RETURNING = "RETURNING id, message_id, queue, actor, args, kwargs, options, created_at"


class LedgerBatches(threading.Thread, ABC):
    """A thread that runs the ledger rows of `actors` in batches (see the module docstring)."""

    actors: ClassVar[tuple[str, ...]]
    channel: ClassVar[str]
    #: The queue the actors are on: pausing it stops the claims.
    queue: ClassVar[str]

    def __init__(self, settings: Settings, resources: Any = None,
                 actor_options: Callable[[str], dict[str, Any]] | None = None, series: Any = None, *,
                 paused: PausedQueues | None = None, throughput: ThroughputCounters | None = None) -> None:
        super().__init__(name=type(self).__name__.lower(), daemon=True)
        self.settings = settings
        self._paused = paused
        self._throughput = throughput
        self._resources = resources
        self._actor_options = actor_options or (lambda actor: {})
        self._series = series
        self._stopping = threading.Event()
        self._outage = False
        predicate = actors_sql(self.actors)
        self._claim = text(f"""{_HANDED}
WHERE id IN (SELECT id FROM jobs WHERE state = 'waiting' AND {predicate} AND due_at <= now()
             ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED)
{_RETURNING}""")
        self._claim_one = text(f"{_HANDED}\nWHERE id = :id AND state = 'waiting'\n{_RETURNING}")
        self._next_due: TextClause = text("SELECT EXTRACT(EPOCH FROM min(due_at) - now()) FROM jobs"
                                          f" WHERE state = 'waiting' AND {predicate}")

    # --- what a subclass provides -------------------------------------------------------------------
    @abstractmethod
    def batch_size(self) -> int:
        """At most this many jobs per batch."""

    @abstractmethod
    def run_batch(self) -> int:
        """Claim and run one batch; how many jobs it held (0: none was due)."""

    # --- shared steps -------------------------------------------------------------------------------
    @property
    def resources(self) -> Any:
        if self._resources is None:  # the worker's own clients, looked up each time (they may be replaced)
            from workers.resources import get_resources

            return get_resources()
        return self._resources

    @property
    def jobs_settings(self) -> Settings:
        """The settings the jobs run with: the worker's resources' (as for every other job)."""
        settings: Settings = self.resources.settings
        return settings

    @property
    def paused(self) -> bool:
        """Whether an operator has paused this thread's queue (an in-memory lookup)."""
        return self._paused is not None and self._paused.is_paused(self.queue)

    def tally(self, finished: int, failed: int = 0) -> None:
        """Count jobs that ran (`finished`, of which `failed` failed) in the queue's minute."""
        if self._throughput is not None:
            self._throughput.add(self.queue, finished=finished, failed=failed)

    def claim(self, session: Any, limit: int) -> list[Any]:
        """Up to `limit` due rows, now `handed` to this thread (in the session's transaction);
        none while the queue is paused."""
        if self.paused:
            return []
        lease_s = self.jobs_settings.worker.ledger_lease_s
        rows = list(session.execute(self._claim, {"limit": limit, "lease_s": lease_s}).all())
        TALLY.batch_running(len(rows))
        return rows

    def claim_one(self, session: Any, job_id: int) -> Any:
        lease_s = self.jobs_settings.worker.ledger_lease_s
        return session.execute(self._claim_one, {"id": job_id, "lease_s": lease_s}).first()

    def mark_done(self, job_ids: list[int]) -> None:
        if job_ids:
            with self.resources.sessions.begin() as session:
                session.execute(_DONE, {"ids": job_ids})

    def settle(self, job: Any, error: BaseException, *, log_traceback: bool = True) -> str:
        """A failed run of `job`: retried after its actor's backoff, or failed and recorded."""
        options = self._actor_options(job.actor)
        with self.resources.sessions.begin() as session:
            outcome = ledger.settle_failure(
                session, message_id=str(job.message_id), queue=job.queue, actor=job.actor,
                args=list(job.args), kwargs=dict(job.kwargs or {}), options=dict(job.options or {}),
                created_ms=int(job.created_at.timestamp() * 1000), exception=error,
                max_retries=options.get("max_retries", 8), min_backoff_ms=options.get("min_backoff", 1000),
                max_backoff_ms=options.get("max_backoff", 15 * 60 * 1000))
        self.tally(1, 1)
        if log_traceback:
            log.warning("job.batch_run_failed", actor=job.actor, args=list(job.args), outcome=outcome,
                        error=repr(error), exc_info=error)
        if self._series is not None:
            labels = (job.queue, job.actor)
            self._series.errors.labels(*labels).inc()
            (self._series.rejects if outcome == "failed" else self._series.retries).labels(*labels).inc()
        return outcome

    def count(self, jobs: list[Any], seconds: float) -> None:
        """The jobs' figures in the worker's Prometheus series (as `JobMetrics` counts messages)."""
        if self._series is None:
            return
        for job in jobs:
            labels = (job.queue, job.actor)
            self._series.processed.labels(*labels).inc()
            self._series.duration.labels(*labels).observe(seconds * 1000)

    # --- the loop -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        if self.ident is not None:  # started
            self.join(timeout=5)

    def drain(self) -> int:
        """Run batches until fewer than a full batch was due; returns how many jobs ran."""
        ran = 0
        while not self._stopping.is_set():
            try:
                count = self.run_batch()
            finally:
                TALLY.batch_running(0)  # jobs in progress (`workers/in_progress.py`)
            ran += count
            if count < self.batch_size():
                break
        return ran

    def _pause(self) -> float:
        """Until the next row is due, at most the relay's poll interval."""
        interval = self.jobs_settings.worker.relay_poll_interval_s
        with self.resources.sessions() as session:
            due_in = session.execute(self._next_due).scalar()
        if due_in is None:
            return interval
        return min(interval, max(0.0, float(due_in)))

    def _wait(self, listen_conn: psycopg.Connection[Any], interval: float) -> None:
        """Return on a notification, after `interval` s, or within moments of `stop()`; then take
        every other notification already received (one pass serves them all)."""
        deadline = time.monotonic() + interval
        woken = interval <= 0
        while not woken and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for _ in listen_conn.notifies(timeout=min(remaining, STOP_CHECK_S), stop_after=1):
                woken = True
        for _ in listen_conn.notifies(timeout=0):
            pass

    def run(self) -> None:
        name = self.name
        while not self._stopping.is_set():
            try:
                with psycopg.connect(libpq_dsn(self.settings.db.unpooled_url), autocommit=True,
                                     connect_timeout=5) as listen_conn:
                    listen_conn.execute(f"LISTEN {self.channel}")
                    log.info("batches.started", runner=name, batch_size=self.batch_size())
                    pause = 0.0
                    while not self._stopping.is_set():
                        self._wait(listen_conn, pause)
                        pause = self._pass()
            except Exception as error:  # the LISTEN connection dropped, or a bug: start over shortly
                log.error("batches.error", runner=name, error=repr(error))
                self._stopping.wait(OUTAGE_WAIT_S)

    def _pass(self) -> float:
        if self.paused:
            return STOP_CHECK_S
        try:
            self.drain()
            pause = self._pause()
            if self._outage:
                log.info("batches.resumed", runner=self.name)
                self._outage = False
            return pause
        except Exception as error:
            if not is_outage(error):
                raise
            if not self._outage:
                log.error("batches.paused", runner=self.name, error=repr(error),
                          hint="PostgreSQL or Redis is unreachable; the jobs wait in the ledger")
                self._outage = True
            return OUTAGE_WAIT_S
