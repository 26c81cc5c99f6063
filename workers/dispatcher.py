"""The dispatcher: dispatch rounds and bid checks in batches, straight from the job ledger.

`dispatch.step` and `dispatch.check_bids` are the farm's hot path: one of each per ride and round.
Handed to Redis one message each, every ride paid for several fetch and ack scripts, a session, a
commit and a pipeline of its own. Instead, every worker process that serves the `dispatch` queue
runs one dispatcher thread, which takes their ledger rows many at a time (the relay leaves them
alone: `app.keys.DISPATCH_ACTORS`). A batch:

1. **Claim**: up to `DISPATCH_BATCH_SIZE` due rows become `handed` (a lease, no Redis id) with
   `FOR UPDATE SKIP LOCKED`, so dispatchers of any number of processes share the work;
2. **Run** every round of the batch together (`app.services.dispatch.step_many`: one claim
   statement, one pipeline of GEO searches, one eligibility + offers + bid checks statement), then
   every bid check (`check_many`), in the same transaction as the claim, and **commit**;
3. **Emit** every `ride:offer` of the batch in one Redis pipeline (and the checks' events), then
   mark the rows `done` in one statement.

A crash between the commit and that last statement leaves the rows `handed`: when their lease
lapses the relay finds no Redis message for them and puts them back to waiting, and the next run
re-sends the rounds' open offers (the step's compare-and-set makes the round act once). Delivered
twice, a job acts once.

**Failures.** PostgreSQL or Redis unreachable: the batch rolls back (its rows wait, no retry is
spent) and the dispatcher tries again every second, logging once. Any other error: the batch rolls
back and each of its jobs runs alone, so one bad ride can't hold up the others; a job failing alone
is settled on its row like any ledger job (`workers.ledger.settle_failure`: retried after its
actor's backoff, and out of retries recorded in `failed_jobs` for the CLI to replay).

**Waking.** The dispatcher sleeps on `LISTEN farm_dispatch` (the jobs trigger notifies it when one
of its rows becomes waiting) until the next row is due, so a new ride's first round starts
within a millisecond or two of the commit that created it; a bid check runs when it is due.
Under load, rows pile up while a batch runs and the next batch takes them all: the busier the
farm, the more each ride's cost is shared.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import redis
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db import libpq_dsn
from app.keys import DISPATCH_ACTORS, DISPATCH_CHANNEL
from app.logging import get_logger
from app.services import dispatch
from app.settings import Settings
from workers import ledger

log = get_logger("workers.dispatcher")

AfterCommit = Callable[[Callable[[], None]], None]

STEP, CHECK = DISPATCH_ACTORS
#: How often a dispatcher waiting for a notification checks whether it was asked to stop (s).
STOP_CHECK_S: Final = 0.25
#: How long a dispatcher waits after PostgreSQL or Redis could not be reached (s).
OUTAGE_WAIT_S: Final = 1.0
_ACTORS_SQL = "actor IN ('dispatch.step', 'dispatch.check_bids')"  # as in migration 0008's index

_CLAIM = text(f"""
UPDATE jobs SET state = 'handed', handed_at = now(), lease_until = now() + make_interval(secs => :lease_s),
                epoch = NULL, redis_message_id = NULL
WHERE id IN (SELECT id FROM jobs WHERE state = 'waiting' AND {_ACTORS_SQL} AND due_at <= now()
             ORDER BY due_at LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING id, message_id, queue, actor, args, kwargs, options, created_at
""")

_CLAIM_ONE = text("""
UPDATE jobs SET state = 'handed', handed_at = now(), lease_until = now() + make_interval(secs => :lease_s),
                epoch = NULL, redis_message_id = NULL
WHERE id = :id AND state = 'waiting'
RETURNING id, message_id, queue, actor, args, kwargs, options, created_at
""")

_DONE = text("""
UPDATE jobs SET state = 'done', finished_at = now(), lease_until = NULL
WHERE id = ANY(CAST(:ids AS bigint[])) AND state = 'handed'
""")

_NEXT_DUE = text(f"""
SELECT EXTRACT(EPOCH FROM min(due_at) - now()) FROM jobs WHERE state = 'waiting' AND {_ACTORS_SQL}
""")

#: Errors that mean PostgreSQL or Redis is away, not that a job is wrong: nothing is spent on them.
_OUTAGES = (redis.ConnectionError, redis.TimeoutError, psycopg.OperationalError, sa_exc.OperationalError,
            sa_exc.InterfaceError)


def is_outage(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _OUTAGES)


@dataclass(frozen=True)
class Batch:
    """What one batch did: jobs run, rounds claimed, offers sent, checks acted on."""

    jobs: int = 0
    rounds: int = 0
    offers: int = 0
    checks: int = 0


def _ride(job: Any) -> tuple[uuid.UUID, int]:
    ride_id, round_ = job.args
    return uuid.UUID(str(ride_id)), int(round_)


class Dispatcher(threading.Thread):
    """One per worker process serving the `dispatch` queue (`DispatcherMiddleware`)."""

    def __init__(self, settings: Settings, resources: Any = None,
                 actor_options: Callable[[str], dict[str, Any]] | None = None, series: Any = None) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.settings = settings
        self._resources = resources
        self._actor_options = actor_options or (lambda actor: {})
        self._series = series
        self._stopping = threading.Event()
        self._outage = False

    @property
    def resources(self) -> Any:
        if self._resources is None:  # the worker's own clients, looked up each time (they may be replaced)
            from workers.resources import get_resources

            return get_resources()
        return self._resources

    @property
    def jobs_settings(self) -> Settings:
        """The settings the jobs run with: the worker's resources' (as for every other job)."""
        return self.resources.settings

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    # --- one batch ------------------------------------------------------------------------------
    def run_batch(self, limit: int | None = None) -> Batch:
        """Claim and run one batch of due rounds and checks; an empty Batch when none was due."""
        settings = self.jobs_settings
        limit = limit or settings.dispatch.batch_size
        lease_s = settings.worker.ledger_lease_s
        resources = self.resources
        started = time.perf_counter()
        actions: list[Callable[[], None]] = []
        with resources.sessions() as session:
            jobs = session.execute(_CLAIM, {"limit": limit, "lease_s": lease_s}).all()
            if not jobs:
                session.rollback()
                return Batch()
            try:
                batch = self._run(session, jobs, actions.append)
                session.commit()
            except BaseException as error:
                session.rollback()
                if is_outage(error) or not isinstance(error, Exception):
                    raise
                log.warning("dispatch.batch_failed", jobs=len(jobs), error=repr(error))
                return self._run_alone([job.id for job in jobs])
        self._after_commit(actions, [job.id for job in jobs])
        self._count(jobs, time.perf_counter() - started)
        return batch

    def _run(self, session: Session, jobs: list[Any], after_commit: AfterCommit) -> Batch:
        resources = self.resources
        settings = resources.settings
        steps = [_ride(job) for job in jobs if job.actor == STEP]
        checks = [_ride(job) for job in jobs if job.actor == CHECK]
        publisher = resources.publisher
        offers = 0
        rounds = 0
        if steps:
            results = dispatch.step_many(session, resources.driver_index, settings.dispatch, steps,
                                         after_commit=after_commit, emit=publisher.emit,
                                         emit_many=publisher.emit_many)
            rounds = sum(1 for result in results if result.claimed)
            offers = sum(len(result.offered) for result in results)
        acted = 0
        if checks:
            outcomes = dispatch.check_many(session, settings.dispatch, checks, after_commit=after_commit,
                                           emit=publisher.emit, twilio=settings.twilio)
            acted = sum(1 for outcome in outcomes if outcome.outcome != "skipped")
        return Batch(jobs=len(jobs), rounds=rounds, offers=offers, checks=acted)

    def _after_commit(self, actions: list[Callable[[], None]], job_ids: list[int]) -> None:
        """The batch's emits, then its rows marked done (a failed emit leaves them to their lease)."""
        for action in actions:
            action()
        with self.resources.sessions.begin() as session:
            session.execute(_DONE, {"ids": job_ids})

    def _run_alone(self, job_ids: list[int]) -> Batch:
        """Run each job of a failed batch in its own transaction; settle the ones that fail alone."""
        total = Batch()
        for job_id in job_ids:
            actions: list[Callable[[], None]] = []
            with self.resources.sessions() as session:
                job = session.execute(_CLAIM_ONE, {
                    "id": job_id, "lease_s": self.jobs_settings.worker.ledger_lease_s}).first()
                if job is None:
                    continue
                try:
                    done = self._run(session, [job], actions.append)
                    session.commit()
                except Exception as error:
                    session.rollback()
                    if is_outage(error):
                        raise
                    self._settle(job, error)
                    continue
            self._after_commit(actions, [job.id])
            total = Batch(total.jobs + 1, total.rounds + done.rounds, total.offers + done.offers,
                          total.checks + done.checks)
        return total

    def _settle(self, job: Any, error: Exception) -> None:
        options = self._actor_options(job.actor)
        with self.resources.sessions.begin() as session:
            outcome = ledger.settle_failure(
                session, message_id=str(job.message_id), queue=job.queue, actor=job.actor,
                args=list(job.args), kwargs=dict(job.kwargs or {}), options=dict(job.options or {}),
                created_ms=int(job.created_at.timestamp() * 1000), exception=error,
                max_retries=options.get("max_retries", 8), min_backoff_ms=options.get("min_backoff", 200),
                max_backoff_ms=options.get("max_backoff", 60_000))
        log.warning("dispatch.job_failed", actor=job.actor, args=list(job.args), outcome=outcome,
                    error=repr(error), exc_info=error)
        if self._series is not None:
            labels = (job.queue, job.actor)
            self._series.errors.labels(*labels).inc()
            (self._series.rejects if outcome == "failed" else self._series.retries).labels(*labels).inc()

    def _count(self, jobs: list[Any], seconds: float) -> None:
        if self._series is None:
            return
        for job in jobs:
            labels = (job.queue, job.actor)
            self._series.processed.labels(*labels).inc()
            self._series.duration.labels(*labels).observe(seconds * 1000)

    # --- the loop -------------------------------------------------------------------------------
    def drain(self) -> int:
        """Run batches until fewer than a full batch was due; returns how many jobs ran."""
        ran = 0
        while not self._stopping.is_set():
            batch = self.run_batch()
            ran += batch.jobs
            if batch.jobs < self.jobs_settings.dispatch.batch_size:
                break
        return ran

    def _pause(self) -> float:
        """Until the next row is due, at most the relay's poll interval."""
        interval = self.jobs_settings.worker.relay_poll_interval_s
        with self.resources.sessions() as session:
            due_in = session.execute(_NEXT_DUE).scalar()
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
        while not self._stopping.is_set():
            try:
                with psycopg.connect(libpq_dsn(self.settings.db.unpooled_url), autocommit=True,
                                     connect_timeout=5) as listen_conn:
                    listen_conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
                    log.info("dispatch.dispatcher_started", batch_size=self.settings.dispatch.batch_size)
                    pause = 0.0
                    while not self._stopping.is_set():
                        self._wait(listen_conn, pause)
                        pause = self._pass()
            except Exception as error:  # the LISTEN connection dropped: connect again shortly
                log.error("dispatch.dispatcher_error", error=repr(error))
                self._stopping.wait(OUTAGE_WAIT_S)

    def _pass(self) -> float:
        try:
            self.drain()
            pause = self._pause()
            if self._outage:
                log.info("dispatch.dispatcher_resumed")
                self._outage = False
            return pause
        except Exception as error:
            if not is_outage(error):
                raise
            if not self._outage:
                log.error("dispatch.dispatcher_paused", error=repr(error),
                          hint="PostgreSQL or Redis is unreachable; the rounds wait in the ledger")
                self._outage = True
            return OUTAGE_WAIT_S
