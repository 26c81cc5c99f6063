"""Bids: a driver offered a ride names a price and an ETA; the customer accepts exactly one.

The database decides every race. A bid holds the ride row `FOR SHARE` (bids go in side by side;
an accept waits for them and they wait for it), the unique index `uq_bids_ride_driver` refuses a
second bid. An accept holds the ride row `FOR UPDATE`, moves it with an UPDATE conditional on
`PENDING_BIDS`, takes the driver with an UPDATE conditional on it being online, not suspended and
`active_ride_id IS NULL` (backed by its unique constraint; a refusal names why in
`details.reason`: `DRIVER_OFFLINE`, `DRIVER_SUSPENDED`, `DRIVER_BUSY`) and `uq_bids_one_accepted`
backs the one accepted bid: a losing accept is a 409 `CONFLICT` and the unit of work rolls
everything back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import currencies
from app.adapters.realtime import AsyncPublisher
from app.db import AsyncUnitOfWork
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.keys import ride_room
from app.logging import get_logger
from app.services import notifications, payments
from app.services.access import Principal
from app.services.rides import RideView, load_ride, move_ride, rowcount, view_of
from app.settings import Settings
from app.timestamps import rfc3339
from models import (
    Bid,
    BidStatus,
    Driver,
    DriverAvailability,
    Offer,
    PaymentMethod,
    Region,
    Ride,
    RideStatus,
    User,
)
from models.ride_states import CUSTOMER, DRIVER

log = get_logger("bids")


@dataclass(frozen=True)
class BidRequest:
    amount: int
    currency: str
    eta_minutes: int



def bid_payload(bid: Bid) -> dict[str, Any]:
    """The bid as API.md shapes it (the `bid:new` payload; it carries `rideId` and `at`)."""
    return {
        "id": str(bid.id),
        "rideId": str(bid.ride_id),
        "driverId": str(bid.driver_id),
        "price": {"amount": bid.amount, "currency": bid.currency},
        "etaMinutes": bid.eta_minutes,
        "status": bid.status.value,
        "at": rfc3339(bid.created_at),
    }


# --- place -----------------------------------------------------------------------------------------
def check_price(currency: currencies.Currency, amount: int, *, card: bool) -> None:
    """A price Stripe would take (`ValidationFailed` naming `price.amount` or `price.currency`).

    Every ride: a multiple of the currency's step (10 in TND, 100 in ISK), so the amount means the
    same whether it is paid by card or in cash. Card rides also: a currency Stripe charges, at least
    its documented minimum charge and at most its maximum. Cash rides never reach Stripe, so its
    minimum does not bind them.
    """
    if card and not currency.card:
        raise ValidationFailed(f"Card rides can't be paid in {currency.code}: Stripe doesn't charge it.",
                               details={"price.currency": "not charged by card"})
    problem = currency.problem(amount, card=card)
    if problem is not None:
        raise ValidationFailed(f"The price {problem}.", details={"price.amount": problem})


async def place_bid(uow: AsyncUnitOfWork, publisher: AsyncPublisher, principal: Principal,
                    ride_id: uuid.UUID, request: BidRequest) -> Bid:
    """A driver's one bid on a ride it was offered; `bid:new` goes to the ride's room after commit."""
    principal.require_role(DRIVER)
    money = currencies.lookup(request.currency)
    if money is None:
        raise ValidationFailed(f"{request.currency} is not an ISO 4217 currency we take.",
                               details={"price.currency": "unknown ISO 4217 currency"})
    session = uow.session
    row = (await session.execute(
        select(Ride.status, Ride.payment_method, Region.currency)
        .join(Region, Region.code == Ride.region_code)
        .where(Ride.id == ride_id).with_for_update(read=True, of=Ride)
    )).first()
    if row is None:
        raise NotFound("No ride has this id.")
    status, payment_method, currency = row
    offer = await session.get(Offer, (ride_id, principal.id))
    if offer is None:
        raise Forbidden("This ride was not offered to you.")
    if status != RideStatus.PENDING_BIDS:
        raise Conflict("The ride is no longer open for bids.", details={"status": status.value})
    now = datetime.now(UTC)
    if offer.expires_at <= now:
        raise Conflict("Your offer has expired.", details={"expiresAt": rfc3339(offer.expires_at)})
    if request.currency != currency:
        raise Conflict(f"Bids on this ride are in {currency}.", details={"currency": currency})
    check_price(money, request.amount, card=payment_method == PaymentMethod.CARD)
    bid = (await session.execute(
        insert(Bid).values(id=uuid.uuid4(), ride_id=ride_id, driver_id=principal.id, amount=request.amount,
                           currency=request.currency, eta_minutes=request.eta_minutes,
                           status=BidStatus.PENDING, created_at=now)
        .on_conflict_do_nothing(index_elements=[Bid.ride_id, Bid.driver_id])
        .returning(Bid)
    )).scalar_one_or_none()
    if bid is None:
        raise Conflict("You have already bid on this ride.", details={"bid": "exists"})
    payload = bid_payload(bid)
    uow.after_commit(lambda: publisher.emit("bid:new", payload, ride_room(ride_id)))
    log.info("bid.placed", ride_id=str(ride_id), bid_id=str(bid.id), driver_id=str(principal.id),
             amount=request.amount, currency=request.currency)
    return bid


# --- list ------------------------------------------------------------------------------------------
async def list_bids(session: AsyncSession, principal: Principal, ride_id: uuid.UUID) -> list[Bid]:
    """The ride's bids, newest first, for its customer and admins (a driver who sees it: 403)."""
    ride = await load_ride(session, principal, ride_id)
    if principal.role == DRIVER:
        raise Forbidden("Only the ride's customer may list its bids.")
    return list((await session.scalars(
        select(Bid).where(Bid.ride_id == ride.id).order_by(Bid.created_at.desc(), Bid.id.desc())
    )).all())


# --- accept ----------------------------------------------------------------------------------------
async def accept_bid(uow: AsyncUnitOfWork, publisher: AsyncPublisher, principal: Principal,
                     ride_id: uuid.UUID, bid_id: uuid.UUID, *, settings: Settings) -> RideView:
    """Assign the bid's driver (`BID_ACCEPTED`), reject the other bids; only one accept ever wins."""
    session = uow.session
    ride = await load_ride(session, principal, ride_id, for_update=True)
    if principal.role != CUSTOMER:
        raise Forbidden("Only the ride's customer may accept a bid.")
    bid = await session.scalar(select(Bid).where(Bid.id == bid_id, Bid.ride_id == ride.id))
    if bid is None:
        raise NotFound("This ride has no bid with this id.")
    if ride.status != RideStatus.PENDING_BIDS or bid.status != BidStatus.PENDING:
        raise Conflict("The ride is no longer open for bids.", details={"status": ride.status.value})
    await payments.check_driver_can_be_paid(session, settings, ride, bid.driver_id)
    try:
        await _take_driver(session, bid.driver_id, ride.id)
        await session.execute(
            update(Bid).where(Bid.ride_id == ride.id, Bid.id != bid.id, Bid.status == BidStatus.PENDING)
            .values(status=BidStatus.REJECTED)
        )
        accepted = await session.execute(
            update(Bid).where(Bid.id == bid.id, Bid.status == BidStatus.PENDING)
            .values(status=BidStatus.ACCEPTED)
        )
        if rowcount(accepted) != 1:
            raise Conflict("The bid is no longer open.")
        await move_ride(uow, publisher, ride, RideStatus.BID_ACCEPTED, actor=principal,
                        changes={"driver_id": bid.driver_id, "accepted_bid_id": bid.id})
        await payments.open_payment(session, ride, driver_id=bid.driver_id, amount=bid.amount,
                                    currency=bid.currency, hold_timeout_s=settings.stripe.hold_timeout_s)
    except IntegrityError as exc:  # a backing constraint caught a race the locks should prevent
        raise Conflict("Another accept won this ride.") from exc
    await notifications.driver_assigned_async(session, ride, bid, settings.twilio)
    log.info("bid.accepted", ride_id=str(ride.id), bid_id=str(bid.id), driver_id=str(bid.driver_id))
    return await view_of(session, ride)


async def _take_driver(session: AsyncSession, driver_id: uuid.UUID, ride_id: uuid.UUID) -> None:
    """Mark the driver busy with this ride if it is online, not suspended and free (`Conflict` else).

    The conditions are the UPDATE's own, so a driver going offline, being suspended or taken by
    another ride while this accept runs can't slip between a check and the take: PostgreSQL
    re-checks them on the row a concurrent commit left. Only after a refusal is the row read again,
    to say why (`details.reason`).
    """
    taken = await session.execute(
        update(Driver)
        .where(Driver.user_id == driver_id, Driver.active_ride_id.is_(None),
               Driver.availability == DriverAvailability.ONLINE,
               User.id == Driver.user_id, User.is_active.is_(True))
        .values(active_ride_id=ride_id)
        .execution_options(synchronize_session=False)
    )
    if rowcount(taken) == 1:
        return
    row = (await session.execute(
        select(User.is_active, Driver.active_ride_id).join(Driver, Driver.user_id == User.id)
        .where(User.id == driver_id)
    )).one()
    if not row.is_active:
        reason = "DRIVER_SUSPENDED"
    else:
        reason = "DRIVER_BUSY" if row.active_ride_id is not None else "DRIVER_OFFLINE"
    raise Conflict(_UNAVAILABLE[reason], details={"reason": reason, "driverId": str(driver_id)})


#: Why a bid's driver can't be taken (`details.reason`) and what the customer is told.
_UNAVAILABLE: dict[str, str] = {
    "DRIVER_SUSPENDED": "This driver's account is suspended; accept another bid.",
    "DRIVER_BUSY": "This driver is busy with another ride; accept another bid.",
    "DRIVER_OFFLINE": "This driver has gone offline; accept another bid.",
}
