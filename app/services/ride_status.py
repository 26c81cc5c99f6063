"""The moves after an accept: the assigned driver walks the ride forward; the customer or an admin
cancels it. The state machine (`models.ride_states`) decides; a finished ride frees its driver.

Each use case reacts to the move `move_ride` returns, in its transaction: `payments.after_ride_move`
(COMPLETED → capture; CANCELLED → release or fee), the notifications, the driver freed.

Each move locks the ride row first (`load_ride(for_update=True)`), so concurrent moves of one ride
happen one after the other and each sees the status the previous one left.
"""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.adapters.realtime import AsyncPublisher
from app.db import AsyncUnitOfWork
from app.errors import Forbidden
from app.services import audit, notifications, payments
from app.services.access import Principal
from app.services.rides import RideView, load_ride, move_ride, require_driver_of, view_of
from app.settings import Settings
from models import Bid, BidStatus, Driver, Ride, RideStatus
from models.ride_states import ADMIN, DRIVER


async def advance_ride(uow: AsyncUnitOfWork, publisher: AsyncPublisher, principal: Principal,
                       ride_id: uuid.UUID, target: RideStatus, *, settings: Settings) -> RideView:
    """The assigned driver's next step (`InvalidTransition` for any other); COMPLETED frees it.

    A card ride moves past BID_ACCEPTED only once its hold is authorized (409 `CONFLICT`,
    `details.reason` `PAYMENT_NOT_AUTHORIZED`); a ride under way is never stopped for money
    (capture settles it). The customer is told when the driver sets off (DRIVER_ARRIVING) and when
    the ride is done.
    """
    ride = await load_ride(uow.session, principal, ride_id, for_update=True)
    require_driver_of(principal, ride)
    if ride.status == RideStatus.BID_ACCEPTED and target == RideStatus.DRIVER_ARRIVING:
        await payments.require_hold_secured(uow.session, ride)
    moved = await move_ride(uow, publisher, ride, target, actor=principal)
    await payments.after_ride_move(uow.session, ride, moved.before, moved.after)  # COMPLETED: capture
    await notifications.ride_moved_async(uow.session, ride, moved.after, settings.twilio)
    if moved.after == RideStatus.COMPLETED:
        await release_driver(uow.session, ride)
    return await view_of(uow.session, ride)


async def cancel_ride(uow: AsyncUnitOfWork, publisher: AsyncPublisher, principal: Principal,
                      ride_id: uuid.UUID, reason: str | None, *, settings: Settings) -> RideView:
    """Cancel for the customer (until PICKUP_ARRIVED) or an admin (any non-final state).

    The assigned driver is freed and the bids still open are rejected; a ride cancelled while
    `PENDING_BIDS` stops being dispatched (each dispatch job checks the status first). The other
    party is told: the assigned driver when the customer cancels, both when an admin does.
    """
    ride = await load_ride(uow.session, principal, ride_id, for_update=True)
    if principal.role == DRIVER:
        raise Forbidden("A driver may not cancel a ride.")
    moved = await move_ride(uow, publisher, ride, RideStatus.CANCELLED, actor=principal, reason=reason)
    await payments.after_ride_move(uow.session, ride, moved.before, moved.after)  # release or fee
    if principal.role == ADMIN:
        audit.record(uow.session, audit.Operator.of_caller(principal), "ride.cancelled", target_type="ride",
                     target_id=ride.id, details={"from": moved.before.value, "reason": reason})
    await notifications.ride_cancelled_async(uow.session, ride, by_role=principal.role, reason=reason,
                                             settings=settings.twilio)
    await release_driver(uow.session, ride)
    await uow.session.execute(
        update(Bid).where(Bid.ride_id == ride.id, Bid.status == BidStatus.PENDING)
        .values(status=BidStatus.REJECTED)
    )
    return await view_of(uow.session, ride)


async def release_driver(session: AsyncSession, ride: Ride) -> None:
    """The driver busy with this ride is free again."""
    await session.execute(
        update(Driver).where(Driver.active_ride_id == ride.id).values(active_ride_id=None)
    )
