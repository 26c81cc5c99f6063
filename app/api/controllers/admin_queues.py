"""`/api/v1/admin/queues`: every queue's figures; pause and resume a queue (admins)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas_queues import PauseIn, QueueList, QueueOut
from app.services import audit, queue_pauses
from app.services.queue_overview import queue_item, queues_overview_async
from models import Role


async def _overview(uow: Any, state: State) -> dict[str, Any]:
    ctx = web_context(state)
    return await queues_overview_async(uow.session, ctx.broker_redis(), ctx.settings)


class AdminQueuesController(Controller):
    path = "/admin/queues"
    tags = ["admin"]
    dependencies = caller_with_role("admin", Role.ADMIN)

    @get("/")
    async def list_queues(self, uow: UnitOfWorkDep, state: State, admin: CallerDep) -> QueueList:
        """Per queue: Redis (ready, delayed, in flight, dead), the ledger, failed jobs not yet replayed,
        the pause, and the last hour's runs and failures per minute; workers alive."""
        return msgspec.convert(await _overview(uow, state), QueueList)

    @post("/{queue:str}/pause", status_code=HTTP_200_OK)
    async def pause(self, queue: FromPath[str], uow: UnitOfWorkDep, state: State, admin: CallerDep,
                    data: JSONBody[PauseIn | None] = None) -> QueueOut:
        """Pause a queue: workers take none of its jobs until it is resumed (already paused: kept as
        it was). Audited `queue.paused`."""
        reason = data.reason if data is not None else None
        operator = audit.Operator.of_caller(admin)
        await uow.session.run_sync(lambda session: queue_pauses.pause(session, queue, operator, reason))
        return msgspec.convert(queue_item(await _overview(uow, state), queue), QueueOut)

    @post("/{queue:str}/resume", status_code=HTTP_200_OK)
    async def resume(self, queue: FromPath[str], uow: UnitOfWorkDep, state: State,
                     admin: CallerDep) -> QueueOut:
        """Resume a paused queue: workers take its jobs again within a second (not paused: nothing
        changes). Audited `queue.resumed`."""
        operator = audit.Operator.of_caller(admin)
        await uow.session.run_sync(lambda session: queue_pauses.resume(session, queue, operator))
        return msgspec.convert(queue_item(await _overview(uow, state), queue), QueueOut)
