"""`/api/v1/admin/*`: admin-only account and payment actions, and the audit log (failed jobs:
`admin_jobs.py`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas import ReasonIn
from app.api.schemas_admin import AuditEntryList
from app.api.schemas_payments import RefundIn, RefundOut
from app.records import AuditEntryOut
from app.services import accounts, audit, failed_jobs, payments
from models import Role


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]
    dependencies = caller_with_role("admin", Role.ADMIN)

    @post("/drivers/{driver_id:uuid}/suspend", status_code=HTTP_204_NO_CONTENT)
    async def suspend(
        self,
        driver_id: FromPath[uuid.UUID],
        data: JSONBody[ReasonIn],
        uow: UnitOfWorkDep,
        state: State,
        admin: CallerDep,
    ) -> None:
        """Suspend a driver: every token refused at once (403), live sockets disconnected."""
        ctx = web_context(state)
        await accounts.suspend_driver(uow, ctx.tokens, driver_id, data.reason, index=ctx.driver_index,
                                      actor_id=admin.id, actor_role=admin.role, operator=admin.user.email,
                                      publisher=ctx.publisher)

    @post("/drivers/{driver_id:uuid}/activate", status_code=HTTP_204_NO_CONTENT)
    async def activate(
        self,
        driver_id: FromPath[uuid.UUID],
        data: JSONBody[ReasonIn],
        uow: UnitOfWorkDep,
        state: State,
        admin: CallerDep,
    ) -> None:
        """Re-activate a driver; it logs in again (older tokens stay refused)."""
        await accounts.activate_driver(
            uow, web_context(state).tokens, driver_id, data.reason, actor_id=admin.id, actor_role=admin.role,
            operator=admin.user.email,
        )

    @post("/rides/{ride_id:uuid}/refund", status_code=HTTP_200_OK)
    async def refund(self, ride_id: FromPath[uuid.UUID], data: JSONBody[RefundIn], uow: UnitOfWorkDep,
                     admin: CallerDep) -> RefundOut:
        """Refund (part of) what a card ride captured; `payments.refund` does it (status `requested`)."""
        request_id = await payments.request_refund(uow.session, ride_id, data.amount)
        audit.record(uow.session, audit.Operator.of_caller(admin), "payment.refund_requested",
                     target_type="ride", target_id=ride_id,
                     details={"amount": data.amount, "reason": data.reason, "requestId": request_id})
        return RefundOut(ride_id=ride_id, request_id=request_id, status="requested")

    @get("/audit")
    async def list_audit(
        self, uow: UnitOfWorkDep, admin: CallerDep,
        action: Annotated[str | None, QueryParameter(
            name="action", max_length=64,
            description="`driver.suspended`, or a prefix ending in `.`")] = None,
        actor_id: Annotated[uuid.UUID | None, QueryParameter(name="actorId")] = None,
        operator: Annotated[str | None, QueryParameter(
            name="operator", max_length=200, description="text in the operator's name")] = None,
        target_type: Annotated[str | None, QueryParameter(name="targetType", max_length=32)] = None,
        target_id: Annotated[str | None, QueryParameter(name="targetId", max_length=64)] = None,
        since: Annotated[str | None, QueryParameter(name="since", max_length=64,
                                                    description="2h, 7d, … or an RFC 3339 time")] = None,
        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=200)] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=200)] = 50,
    ) -> AuditEntryList:
        """The append-only audit log, newest first: admin and operator actions with who took them."""
        where = audit.AuditFilter(action=action, actor_id=actor_id, operator=operator,
                                  target_type=target_type, target_id=target_id,
                                  since=failed_jobs.parse_since(since) if since else None)
        rows, next_cursor = await uow.session.run_sync(
            lambda session: audit.list_entries(session, where, limit=limit, cursor=cursor))
        return AuditEntryList(items=[AuditEntryOut.of(row) for row in rows], next_cursor=next_cursor)
