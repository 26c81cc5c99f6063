"""`/api/v1/rides/{id}/bids`: drivers bid on rides they were offered; the customer accepts one."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app.api.dependencies import (
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    provide_principal,
    web_context,
)
from app.api.schemas_rides import BidIn, BidList, BidOut, RideOut
from app.services import bids


class BidController(Controller):
    path = "/rides/{ride_id:uuid}/bids"
    tags = ["bids"]
    dependencies = {"principal": Provide(provide_principal)}

    @post("/", status_code=HTTP_201_CREATED, dependencies=WRITE_LIMIT)
    async def place(self, ride_id: FromPath[uuid.UUID], data: JSONBody[BidIn], uow: UnitOfWorkDep,
                    state: State, principal: CallerDep, limit: RateLimitDep) -> BidOut:
        """Bid on a ride offered to you (once, in the region's currency, before the offer expires)."""
        bid = await bids.place_bid(uow, web_context(state).publisher, principal, ride_id, data.to_request())
        return BidOut.of(bid)

    @get("/")
    async def list(self, ride_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, principal: CallerDep) -> BidList:
        """The ride's bids, newest first (its customer and admins)."""
        items = await bids.list_bids(uow.session, principal, ride_id)
        return BidList(items=[BidOut.of(b) for b in items], next_cursor=None)

    @post("/{bid_id:uuid}/accept", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def accept(self, ride_id: FromPath[uuid.UUID], bid_id: FromPath[uuid.UUID], uow: UnitOfWorkDep,
                     state: State, principal: CallerDep, limit: RateLimitDep) -> RideOut:
        """Accept one bid: its driver is assigned (BID_ACCEPTED), the others are rejected."""
        ctx = web_context(state)
        view = await bids.accept_bid(uow, ctx.publisher, principal, ride_id, bid_id, settings=ctx.settings)
        return RideOut.of(view)
