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

A crash between the commit and that last statement leaves the rows `handed` until their lease
lapses; then the relay puts them back and the next run re-sends the rounds' open offers (the
step's compare-and-set makes the round act once). Any error other than an outage
(`workers.batches`) rolls the batch back and runs each of its jobs alone, so one bad ride can't
hold up the others; a job failing alone is settled on its row like any ledger job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from app.keys import DISPATCH_ACTORS, DISPATCH_CHANNEL, QUEUE_DISPATCH
from app.logging import get_logger
from app.services import dispatch
from workers.batches import LedgerBatches, is_outage

log = get_logger("workers.dispatcher")

AfterCommit = Callable[[Callable[[], None]], None]
STEP, CHECK = DISPATCH_ACTORS


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


class Dispatcher(LedgerBatches):
    """One per worker process serving the `dispatch` queue (`DispatcherMiddleware`)."""

    actors: ClassVar[tuple[str, ...]] = DISPATCH_ACTORS
    channel: ClassVar[str] = DISPATCH_CHANNEL
    queue: ClassVar[str] = QUEUE_DISPATCH

    def batch_size(self) -> int:
        return self.jobs_settings.dispatch.batch_size

    # --- one batch ------------------------------------------------------------------------------
    def run_batch(self) -> int:
        return self.dispatch_batch().jobs

    def dispatch_batch(self) -> Batch:
        """Claim and run one batch of due rounds and checks; an empty Batch when none was due."""
        started = time.perf_counter()
        actions: list[Callable[[], None]] = []
        with self.resources.sessions() as session:
            jobs = self.claim(session, self.batch_size())
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
        self.count(jobs, time.perf_counter() - started)
        self.tally(len(jobs))
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
        self.mark_done(job_ids)

    def _run_alone(self, job_ids: list[int]) -> Batch:
        """Run each job of a failed batch in its own transaction; settle the ones that fail alone."""
        total = Batch()
        for job_id in job_ids:
            actions: list[Callable[[], None]] = []
            with self.resources.sessions() as session:
                job = self.claim_one(session, job_id)
                if job is None:
                    continue
                try:
                    done = self._run(session, [job], actions.append)
                    session.commit()
                except Exception as error:
                    session.rollback()
                    if is_outage(error):
                        raise
                    self.settle(job, error)
                    continue
            self._after_commit(actions, [job.id])
            self.tally(1)
            total = Batch(total.jobs + 1, total.rounds + done.rounds, total.offers + done.offers,
                          total.checks + done.checks)
        return total
