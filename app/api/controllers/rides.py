"""`/api/v1/rides`: create, read and list rides (bids and status moves live beside them)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from app.api.dependencies import CallerDep, UnitOfWorkDep, provide_principal
from app.api.schemas_rides import RideIn, RideList, RideOut
from app.services import rides


class RideController(Controller):
    path = "/rides"
    tags = ["rides"]
    dependencies = {"principal": Provide(provide_principal)}

    @post("/", status_code=HTTP_201_CREATED)
    async def create(self, data: JSONBody[RideIn], uow: UnitOfWorkDep, principal: CallerDep) -> RideOut:
        """Request a ride: stored as PENDING_BIDS at once; nearby drivers are offered it in rounds."""
        return RideOut.of(await rides.create_ride(uow, principal, data.to_request()))

    @get("/")
    async def list(
        self, uow: UnitOfWorkDep, principal: CallerDep,
        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=200)] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=100)] = 20,
    ) -> RideList:
        """The caller's rides, newest first (a customer's own; a driver's offered or assigned)."""
        views, next_cursor = await rides.list_rides(uow.session, principal, cursor=cursor, limit=limit)
        return RideList(items=[RideOut.of(v) for v in views], next_cursor=next_cursor)

    @get("/{ride_id:uuid}")
    async def read(self, ride_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, principal: CallerDep) -> RideOut:
        """One ride with its accepted bid and full history (what a reconnecting client catches up on)."""
        return RideOut.of(await rides.get_ride(uow.session, principal, ride_id))



