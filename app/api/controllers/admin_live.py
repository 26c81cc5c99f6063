"""`/api/v1/admin/workers|schedules|map`: the operations console's live views and "run now"."""

from __future__ import annotations

from typing import Annotated

import anyio
import redis
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from app.api.context import WebContext
from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas_live import MapOut, ScheduleList, ScheduleRunOut, WorkerList, shaped
from app.redis_conn import create_sync_redis
from app.services import audit, live_map, ops_live, schedules
from models import Role

#: The blocking broker client of each web process (`QueueInspector` reads), made on first use.
_BROKER_CLIENTS: dict[int, redis.Redis] = {}


def broker_client(ctx: WebContext) -> redis.Redis:
    client = _BROKER_CLIENTS.get(id(ctx))
    if client is None:
        client = _BROKER_CLIENTS[id(ctx)] = create_sync_redis(ctx.settings.redis, decode_responses=False)

        async def close() -> None:
            _BROKER_CLIENTS.pop(id(ctx), None)
            client.close()

        ctx.on_close.append(close)
    return client


class AdminLiveController(Controller):
    path = "/admin"
    tags = ["admin"]
    dependencies = caller_with_role("admin", Role.ADMIN)

    @get("/workers")
    async def workers(self, state: State, admin: CallerDep) -> WorkerList:
        """Worker processes alive (host, pid, queues, threads, jobs in progress, heartbeat) and the
        autoscaler's last 50 decisions, newest first."""
        ctx = web_context(state)
        body = await anyio.to_thread.run_sync(ops_live.workers_overview, broker_client(ctx), ctx.settings)
        return shaped(WorkerList, body)

    @get("/schedules")
    async def list_schedules(self, state: State, uow: UnitOfWorkDep, admin: CallerDep) -> ScheduleList:
        """The clock's periodic jobs: interval, last run (clock or manual, by whom), next run, runs."""
        settings = web_context(state).settings
        items = await uow.session.run_sync(lambda session: schedules.list_schedules(session, settings))
        return shaped(ScheduleList, {"items": items})

    @post("/schedules/{name:str}/run", status_code=HTTP_202_ACCEPTED)
    async def run_now(self, name: FromPath[str], state: State, uow: UnitOfWorkDep,
                      admin: CallerDep) -> Response[ScheduleRunOut]:
        """Write the periodic job now (the clock's dedupe key: 200 `queued: false` while one waits)."""
        schedule = schedules.find(web_context(state).settings, name)
        job_id = await uow.session.run_sync(lambda session: schedules.run(
            session, schedule, trigger=schedules.MANUAL, by=admin.user.email))
        audit.record(uow.session, audit.Operator.of_caller(admin), "schedule.run_now", target_type="schedule",
                     target_id=schedule.name,
                     details={"queued": job_id is not None, "jobId": str(job_id) if job_id else None})
        if job_id is None:
            return Response(ScheduleRunOut(name=schedule.name, queued=False, reason="already waiting"),
                            status_code=HTTP_200_OK)
        return Response(ScheduleRunOut(name=schedule.name, queued=True, job_id=str(job_id)),
                        status_code=HTTP_202_ACCEPTED)

    @get("/map")
    async def live_map(
        self, uow: UnitOfWorkDep, admin: CallerDep,
        region: Annotated[str, QueryParameter(name="region", min_length=1, max_length=16)],
    ) -> MapOut:
        """A region's rides not final and its online drivers (bounds: around its recent rides)."""
        return shaped(MapOut, await live_map.map_view(uow.session, region))
