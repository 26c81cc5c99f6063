"""Rides that end by themselves: bids nobody accepted, a card hold nobody authorized.

- **Acceptance window** (`rides.expire_bids(ride, round)`): written by `dispatch.check_bids` in
  the transaction where a round's check finds bids (the one that sends `bids:ready`), delayed
  `DISPATCH_ACCEPT_WINDOW` seconds. When due, a ride still `PENDING_BIDS` in that round is
  cancelled by the system, its live bids are rejected and the customer is told (`bids_expired`).
  The window counts from that check: its claim sets `rides.updated_at`, which nothing else
  touches while the ride waits for the customer. It never restarts: once a round has bids no
  further round starts; and a window whose round is no longer the ride's is void (a later round
  ran, so its own check starts its own window).
- **Hold timeout** (`rides.expire_hold(ride)`): written in the transaction of a card ride's
  accept, delayed `PAYMENT_HOLD_TIMEOUT` seconds. When due, a ride still `BID_ACCEPTED` whose
  payment is neither authorized nor captured is cancelled by the system, its driver freed,
  `payments.cancel` releases whatever was held, and the customer (`payment_expired`) and the
  driver (`ride_cancelled`) are told.

Both are idempotent: the move is a compare-and-set on the ride's status (and round, and how long
it has waited), so a ride accepted, cancelled, authorized or already expired meanwhile — or a
message delivered twice, replayed or early — changes nothing. A delayed message lost with Redis
is sent again by the reconciler (`app.services.dispatch_reconcile`) once the ride is overdue.

`move_by_system` is the system's one status move in a job's (sync) session, shared with
`dispatch.check_bids`' NO_DRIVERS_AVAILABLE: a compare-and-set, then the pure `ride_moves.move`;
each use case reacts to the move it returns (payments, notifications, bids, the driver freed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from app.keys import RIDES_EXPIRE_BIDS
from app.logging import get_logger
from app.outbox import add_job
from app.services import live_map, notifications, payments, ride_moves
from app.services.ride_moves import BY_SYSTEM, RideMoved, RideState
from app.settings import DispatchSettings, Settings
from models import Bid, BidStatus, Driver, Payment, PaymentMethod, Ride, RideStatus
from models.ride_states import SYSTEM, check_move

log = get_logger("ride_expiry")

Emit = Callable[[str, dict[str, Any], "str | list[str]"], None]
AfterCommit = Callable[[Callable[[], None]], None]

#: The reasons the ride's history gives (`history[].reason`).
NO_ACCEPT_REASON: Final = "no bid was accepted in time"
NO_HOLD_REASON: Final = "payment was not authorized in time"
#: A job may run this much before its due time (clocks of two machines) and still act.
CLOCK_TOLERANCE: Final = timedelta(seconds=1)


def move_by_system(session: Session, ride_id: uuid.UUID, before: RideStatus, target: RideStatus, *,
                   now: datetime, after_commit: AfterCommit, emit: Emit, reason: str | None = None,
                   only_if: tuple[ColumnElement[bool], ...] = ()) -> tuple[Ride, RideMoved] | None:
    """Move the ride `before` → `target` as the system, if it is still `before` (and `only_if`).

    One conditional UPDATE (the compare-and-set), then the move `ride_moves.move` decides: its
    history row (`by` {id: null, role: "system"}) and, after commit, `ride:status` to the ride's
    and both users' rooms. Returns the ride as the UPDATE left it and the move, which the caller
    reacts to; None when the ride was not in that state any more: nothing was written.
    """
    check_move(before, target, SYSTEM)  # a compare-and-set the table refuses is a bug: write nothing
    ride = session.execute(
        update(Ride).where(Ride.id == ride_id, Ride.status == before, *only_if)
        .values(status=target, updated_at=now).returning(Ride)
    ).scalar_one_or_none()
    if ride is None:
        return None
    moved = ride_moves.move(RideState(ride_id, before, ride.customer_id, ride.driver_id), target,
                            by=BY_SYSTEM, at=now, reason=reason)
    session.execute(moved.history_row)
    payload, rooms = moved.event, list(moved.rooms)
    on_map = live_map.ride_emit(ride, at=now)

    def publish() -> None:
        emit("ride:status", payload, rooms)
        emit(*on_map)

    after_commit(publish)
    log.info("ride.status_changed", ride_id=str(ride_id), before=before.value, after=target.value,
             by=SYSTEM, reason=reason)
    return ride, moved


def _reject_live_bids(session: Session, ride_id: uuid.UUID) -> None:
    session.execute(update(Bid).where(Bid.ride_id == ride_id, Bid.status == BidStatus.PENDING)
                    .values(status=BidStatus.REJECTED))


# --- the acceptance window ----------------------------------------------------------------------
def schedule_acceptance_window(session: Session, settings: DispatchSettings, ride_id: uuid.UUID,
                               round_: int) -> None:
    """In the transaction of the bid check that found bids: the window's end, as a delayed job."""
    add_job(session, RIDES_EXPIRE_BIDS, str(ride_id), round_,
            delay_ms=settings.accept_window_s * 1000)


def expire_bids(session: Session, settings: Settings, ride_id: uuid.UUID, round_: int, *, now: datetime,
                after_commit: AfterCommit, emit: Emit) -> bool:
    """The acceptance window of round `round_` closed: cancel the ride if nobody accepted a bid."""
    waited_since = now + CLOCK_TOLERANCE - timedelta(seconds=settings.dispatch.accept_window_s)
    still_waiting = (Ride.dispatch_round == round_, Ride.checked_round == round_,
                     Ride.updated_at <= waited_since)
    found = move_by_system(session, ride_id, RideStatus.PENDING_BIDS, RideStatus.CANCELLED, now=now,
                           after_commit=after_commit, emit=emit, reason=NO_ACCEPT_REASON,
                           only_if=still_waiting)
    if found is None:
        log.info("ride_expiry.bids_skipped", ride_id=str(ride_id), round=round_)
        return False
    ride, _ = found  # PENDING_BIDS holds no payment: nothing for payments to do
    _reject_live_bids(session, ride_id)
    notifications.bids_expired(session, ride, settings.twilio)
    log.info("ride_expiry.bids_expired", ride_id=str(ride_id), round=round_,
             window_s=settings.dispatch.accept_window_s)
    return True


# --- the hold timeout ----------------------------------------------------------------------------
def expire_hold(session: Session, settings: Settings, ride_id: uuid.UUID, *, now: datetime,
                after_commit: AfterCommit, emit: Emit) -> bool:
    """The hold timeout of a card ride passed: cancel it if its payment was never secured.

    The ride row is locked first, then the payment's (the order of a driver's move too), so a
    hold authorized by a webhook at this moment is either seen here or comes after the
    cancellation (and `payments.cancel` releases it).
    """
    ride = session.scalar(select(Ride).where(Ride.id == ride_id).with_for_update())
    if ride is None or ride.status != RideStatus.BID_ACCEPTED or ride.payment_method != PaymentMethod.CARD:
        log.info("ride_expiry.hold_skipped", ride_id=str(ride_id), status=ride and ride.status.value)
        return False
    payment = session.scalar(select(Payment).where(Payment.ride_id == ride_id).with_for_update())
    if payment is None or payment.status in payments.HOLD_SECURED:
        log.info("ride_expiry.hold_skipped", ride_id=str(ride_id), payment=payment and payment.status)
        return False
    if payment.created_at > now + CLOCK_TOLERANCE - timedelta(seconds=settings.stripe.hold_timeout_s):
        log.info("ride_expiry.hold_not_due", ride_id=str(ride_id))
        return False
    found = move_by_system(session, ride_id, RideStatus.BID_ACCEPTED, RideStatus.CANCELLED, now=now,
                           after_commit=after_commit, emit=emit, reason=NO_HOLD_REASON)
    assert found is not None  # the row is locked and was BID_ACCEPTED
    cancelled, moved = found
    session.execute(update(Driver).where(Driver.active_ride_id == ride_id).values(active_ride_id=None))
    _reject_live_bids(session, ride_id)
    payments.cancelled_by_system(session, moved.ride_id, moved.before)
    notifications.hold_expired(session, cancelled, amount=payment.amount, currency=payment.currency,
                               reason=NO_HOLD_REASON, settings=settings.twilio)
    log.info("ride_expiry.hold_expired", ride_id=str(ride_id), payment=payment.status,
             timeout_s=settings.stripe.hold_timeout_s)
    return True
