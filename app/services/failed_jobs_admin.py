"""The failed-jobs registry for admins over the API (`/admin/jobs/*`, the operations console).

The same replay and purge as `farmctl jobs` (`failed_jobs.replay`, `failed_jobs.purge`), run in the
request's transaction: a replay writes its job into the durable ledger (sent when the request
commits), dead letters leave Redis after the commit, and each action is audited as the admin.

Actions on "every job matching" take the count the operator was shown (`expect`): when the
registry no longer holds that many matching jobs, nothing is done (409 `CONFLICT`, details
`{expected, matching}`), so a confirmation never covers more than was previewed. One call handles
at most `MAX_PER_CALL` jobs (400 above: narrow the filters).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import keys
from app.adapters.dead_letters import DeadLetterEraser
from app.db import AsyncUnitOfWork, UnitOfWork
from app.errors import Conflict, NotFound, ValidationFailed
from app.services import audit, failed_jobs
from app.services.failed_job_filter import JobFilter
from models.jobs import FailedJob, FailedJobReplay

#: The most jobs one "replay matching" or "purge matching" call handles.
MAX_PER_CALL = 1000

#: The actors this farm declares (`app/keys.py`): a job of another one is not replayed.
FARM_ACTORS = frozenset(kind.actor for kind in vars(keys).values() if isinstance(kind, keys.JobKind))


def farm_actor(name: str) -> bool:
    return name in FARM_ACTORS


class _RequestWork(UnitOfWork):
    """The request's async unit of work as the sync services see it inside `run_sync`: the same
    transaction; after-commit actions are handed to the request (which commits, not this)."""

    def __init__(self, session: Session, outer: AsyncUnitOfWork) -> None:
        super().__init__(session)
        self._outer = outer

    def after_commit(self, action: Callable[[], Any]) -> None:
        self._outer.after_commit(action)

    def commit(self) -> None:
        raise RuntimeError("the request's unit of work commits")


@dataclass(frozen=True)
class Admin:
    """Who acts: `by` is written on the replays (the admin's email), `operator` in the audit log."""

    by: str
    operator: audit.Operator


@dataclass(frozen=True)
class JobDetail:
    job: FailedJob
    replays: list[FailedJobReplay]
    #: Replays that failed again: their message id → the failed job recorded for them.
    failed_again: dict[str, uuid.UUID]


async def detail(session: AsyncSession, failed_job_id: uuid.UUID) -> JobDetail:
    def read(sync: Session) -> JobDetail:
        job = sync.get(FailedJob, failed_job_id)
        if job is None:
            raise NotFound("No failed job has this id.")
        replays = failed_jobs.replays_of(sync, job.id)
        return JobDetail(job, replays, failed_jobs.failures_of_replays(sync, [r.message_id for r in replays]))

    return await session.run_sync(read)


async def count(session: AsyncSession, where: JobFilter) -> int:
    return await session.run_sync(lambda sync: failed_jobs.count_failed(sync, where))


async def replay_one(uow: AsyncUnitOfWork, failed_job_id: uuid.UUID, *, admin: Admin, force: bool,
                     letters: DeadLetterEraser | None) -> failed_jobs.ReplayOutcome:
    """Replay one job (audited `job.replayed`), or say why not (audited `job.replay_skipped`)."""
    def work(sync: Session) -> failed_jobs.ReplayOutcome:
        if sync.scalar(select(FailedJob.id).where(FailedJob.id == failed_job_id)) is None:
            raise NotFound("No failed job has this id.")
        outcome = _replay(_RequestWork(sync, uow), failed_job_id, admin=admin, force=force, letters=letters)
        if outcome.skipped is not None:
            audit.record(sync, admin.operator, "job.replay_skipped", target_type="failed_job",
                         target_id=failed_job_id, details={"actor": outcome.job.actor,
                                                           "queue": outcome.job.queue,
                                                           "reason": outcome.skipped})
        return outcome

    return await uow.session.run_sync(work)


def _replay(work: UnitOfWork, failed_job_id: uuid.UUID, *, admin: Admin, force: bool,
            letters: DeadLetterEraser | None) -> failed_jobs.ReplayOutcome:
    return failed_jobs.replay(work, failed_job_id, by=admin.by, force=force, known_actor=farm_actor,
                              dead_letters=letters, operator=admin.operator)


def _check_matching(matching: int, expect: int) -> None:
    if matching > MAX_PER_CALL:
        raise ValidationFailed(
            f"{matching} failed jobs match; at most {MAX_PER_CALL} are handled per call.",
            details={"filters": f"narrow the filters to at most {MAX_PER_CALL} jobs",
                     "matching": matching, "limit": MAX_PER_CALL})
    if matching != expect:
        raise Conflict(f"{matching} failed jobs match now, not the {expect} expected; nothing was done.",
                       details={"expected": expect, "matching": matching})


async def replay_matching(uow: AsyncUnitOfWork, where: JobFilter, *, expect: int, admin: Admin,
                          force: bool, letters: DeadLetterEraser | None) -> list[failed_jobs.ReplayOutcome]:
    """Replay every job matching `where` (oldest first) if exactly `expect` match; one outcome each.

    The matching rows are locked first, so the count checked is the set replayed."""
    def work(sync: Session) -> list[failed_jobs.ReplayOutcome]:
        _check_matching(failed_jobs.count_failed(sync, where), expect)
        ids = list(sync.scalars(select(FailedJob.id).where(*where.clauses())
                                .order_by(FailedJob.failed_at, FailedJob.id)
                                .limit(MAX_PER_CALL + 1).with_for_update()))
        _check_matching(len(ids), expect)
        request = _RequestWork(sync, uow)
        outcomes = [_replay(request, job_id, admin=admin, force=force, letters=letters) for job_id in ids]
        replayed = sum(outcome.message_id is not None for outcome in outcomes)
        audit.record(sync, admin.operator, "job.replayed_matching", target_type="failed_job",
                     details={"filter": where.describe(), "matching": len(ids), "replayed": replayed,
                              "skipped": len(ids) - replayed, "force": force})
        return outcomes

    return await uow.session.run_sync(work)


async def purge_matching(uow: AsyncUnitOfWork, where: JobFilter, *, expect: int, admin: Admin,
                         letters: DeadLetterEraser | None) -> int:
    """Delete every job matching `where` if exactly `expect` match (audited `job.purged_matching`)."""
    def work(sync: Session) -> int:
        _check_matching(failed_jobs.count_failed(sync, where), expect)
        purged = failed_jobs.purge(_RequestWork(sync, uow), where, by=admin.by, dead_letters=letters,
                                   operator=admin.operator, action="job.purged_matching")
        _check_matching(purged, expect)  # one more matched meanwhile: the request rolls back
        return purged

    return await uow.session.run_sync(work)
