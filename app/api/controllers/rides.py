"""`/api/v1/rides`: create, read and list rides, move their status, cancel them (bids: `bids.py`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app.api.dependencies import (
    RIDE_LIMIT,
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    provide_principal,
    web_context,
)
from app.api.schemas_rides import CancelIn, RideIn, RideList, RideOut, StatusIn
from app.errors import PaymentsDisabled
from app.services import ride_status, rides


class RideController(Controller):
    path = "/rides"
    tags = ["rides"]
    dependencies = {"principal": Provide(provide_principal)}

    @post("/", status_code=HTTP_201_CREATED, dependencies=RIDE_LIMIT)
    async def create(self, data: JSONBody[RideIn], principal: CallerDep, state: State,
                     limit: RateLimitDep) -> RideOut:
        """Request a ride: stored as PENDING_BIDS at once; nearby drivers are offered it in rounds.

        With `scheduledFor` (15 min to 30 days ahead by default) the ride is booked ahead: its rounds
        start `DISPATCH_SCHEDULE_LEAD` (30 min) before it, or at once when that has passed.

        A card ride on a farm without a Stripe key is refused (409 `CONFLICT`, reason
        `PAYMENTS_DISABLED`); cash works.
        """
        if data.payment_method == "card" and not web_context(state).settings.stripe.enabled:
            raise PaymentsDisabled()
        context = web_context(state)
        return RideOut.of(await rides.create_ride(context.ride_writer, principal, data.to_request(),
                                                  settings=context.settings, publisher=context.publisher))

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

    @post("/{ride_id:uuid}/status", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def move(self, ride_id: FromPath[uuid.UUID], data: JSONBody[StatusIn], uow: UnitOfWorkDep,
                   state: State, principal: CallerDep, limit: RateLimitDep) -> RideOut:
        """The assigned driver moves the ride one step forward (COMPLETED frees the driver)."""
        ctx = web_context(state)
        view = await ride_status.advance_ride(uow, ctx.publisher, principal, ride_id, data.status,
                                              settings=ctx.settings)
        return RideOut.of(view)

    @post("/{ride_id:uuid}/cancel", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def cancel(self, ride_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                     principal: CallerDep, limit: RateLimitDep,
                     data: JSONBody[CancelIn | None] = None) -> RideOut:
        """Cancel (body optional): the customer until PICKUP_ARRIVED, an admin in any non-final state."""
        ctx = web_context(state)
        view = await ride_status.cancel_ride(uow, ctx.publisher, principal, ride_id,
                                             data.reason if data else None, settings=ctx.settings)
        return RideOut.of(view)
