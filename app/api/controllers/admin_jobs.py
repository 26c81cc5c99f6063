"""`/api/v1/admin/jobs/*`: the failed-jobs registry for admins — list, count, read, replay, purge.

The same registry as `farmctl jobs …` (`app/services/failed_jobs_admin.py`); every write is audited
as the admin. Read-only admins may read; their writes are refused before any handler runs.
"""

from __future__ import annotations

import uuid
from typing import Annotated, TypeAlias

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from app.adapters.dead_letters import AsyncDeadLetterEraser
from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas_admin import (
    FailedJobCount,
    FailedJobDetailOut,
    FailedJobList,
    PurgeMatchingIn,
    PurgeOut,
    ReplayIn,
    ReplayMatchingIn,
    ReplayMatchingOut,
    ReplayResultOut,
    job_filter,
)
from app.records import FailedJobOut
from app.services import audit, failed_jobs, failed_jobs_admin
from app.services.access import Principal
from app.services.failed_job_filter import JobFilter
from models import Role

#: The `where` dependency: the filters of the query string.
JobFilterDep: TypeAlias = NamedDependency[JobFilter]


async def provide_job_filter(
    actor: Annotated[str | None, QueryParameter(name="actor", max_length=128)] = None,
    queue: Annotated[str | None, QueryParameter(name="queue", max_length=64)] = None,
    since: Annotated[str | None, QueryParameter(name="since", max_length=64,
                                                description="2h, 7d, … or an RFC 3339 time")] = None,
    until: Annotated[str | None, QueryParameter(
        name="until", max_length=64,
        description="failed before: 2h (ago), 7d, … or an RFC 3339 time")] = None,
    error: Annotated[str | None, QueryParameter(
        name="error", max_length=200, description="text in the exception's type or message")] = None,
    args: Annotated[str | None, QueryParameter(
        name="args", max_length=1000,
        description="text in the args/kwargs JSON (case-insensitive), or a JSON object/array they "
                    "contain")] = None,
    replayed: Annotated[bool | None, QueryParameter(
        name="replayed", description="true: replayed at least once; false: never replayed")] = None,
) -> JobFilter:
    """The registry's filters from the query string."""
    return job_filter(actor=actor, queue=queue, since=since, until=until, error=error, args=args,
                      replayed=replayed)


def _admin(caller: Principal) -> failed_jobs_admin.Admin:
    return failed_jobs_admin.Admin(by=caller.user.email, operator=audit.Operator.of_caller(caller))


def _letters(state: State) -> AsyncDeadLetterEraser:
    ctx = web_context(state)
    return AsyncDeadLetterEraser(ctx.redis, ctx.settings.redis.dramatiq_namespace)


class AdminJobsController(Controller):
    path = "/admin/jobs"
    tags = ["admin"]
    dependencies = {**caller_with_role("admin", Role.ADMIN), "where": Provide(provide_job_filter)}

    @get("/failed")
    async def list_failed_jobs(
        self, uow: UnitOfWorkDep, admin: CallerDep, where: JobFilterDep,
        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=200)] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=100)] = 50,
    ) -> FailedJobList:
        """Failed jobs of the durable registry, newest first.

        `admin` is asked for so that the admin check runs (Litestar resolves only what is asked for).
        """
        rows, next_cursor = await uow.session.run_sync(
            lambda session: failed_jobs.list_failed(session, where, limit=limit, cursor=cursor))
        return FailedJobList(items=[FailedJobOut.of(row) for row in rows], next_cursor=next_cursor)

    @get("/failed/count")
    async def count_failed_jobs(self, uow: UnitOfWorkDep, admin: CallerDep,
                                where: JobFilterDep) -> FailedJobCount:
        """How many failed jobs match the filters (the preview before replaying or purging them)."""
        return FailedJobCount(count=await failed_jobs_admin.count(uow.session, where))

    @get("/failed/{failed_job_id:uuid}")
    async def show_failed_job(self, failed_job_id: FromPath[uuid.UUID], uow: UnitOfWorkDep,
                              admin: CallerDep) -> FailedJobDetailOut:
        """One failed job with its traceback and every replay (and whether each failed again)."""
        return FailedJobDetailOut.of_detail(await failed_jobs_admin.detail(uow.session, failed_job_id))

    @post("/failed/{failed_job_id:uuid}/replay", status_code=HTTP_200_OK)
    async def replay_failed_job(self, failed_job_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                                admin: CallerDep, data: JSONBody[ReplayIn | None] = None) -> ReplayResultOut:
        """Send the job again (new message, fresh retry budget), or say why not (already replayed:
        `force` replays it again; an actor this farm no longer declares)."""
        outcome = await failed_jobs_admin.replay_one(uow, failed_job_id, admin=_admin(admin),
                                                     force=bool(data and data.force), letters=_letters(state))
        return ReplayResultOut.of(outcome)

    @post("/failed/replay", status_code=HTTP_200_OK)
    async def replay_matching(self, data: JSONBody[ReplayMatchingIn], uow: UnitOfWorkDep, state: State,
                              admin: CallerDep) -> ReplayMatchingOut:
        """Replay every job matching `filters`, oldest first, if exactly `expect` match (409 if not;
        at most 1000 per call)."""
        outcomes = await failed_jobs_admin.replay_matching(
            uow, data.filters.where(), expect=data.expect, admin=_admin(admin), force=data.force,
            letters=_letters(state))
        items = [ReplayResultOut.of(outcome) for outcome in outcomes]
        replayed = sum(item.replayed for item in items)
        return ReplayMatchingOut(replayed=replayed, skipped=len(items) - replayed, items=items)

    @post("/failed/purge", status_code=HTTP_200_OK)
    async def purge_matching(self, data: JSONBody[PurgeMatchingIn], uow: UnitOfWorkDep, state: State,
                             admin: CallerDep) -> PurgeOut:
        """Delete every job matching `filters` for good, if exactly `expect` match (409 if not)."""
        purged = await failed_jobs_admin.purge_matching(uow, data.filters.where(), expect=data.expect,
                                                        admin=_admin(admin), letters=_letters(state))
        return PurgeOut(purged=purged)
