"""A booking after its hold: confirmed, cancelled, completed, missed, or expired.

Each use case locks the booking row first (then its payment, the order every booking job keeps),
checks the move with `models.booking_states` as the caller's party (customer, provider, admin,
system), moves it by compare-and-set, and reacts in the same transaction: the payment told what it
owes (`cancellation_fee`), `bookings.settle` to carry it out at Stripe, the notices, the reminders;
the events go out after the commit (`Effects`).

Cancellation policy (`BOOKINGS_*` settings): a customer cancelling at least
`BOOKINGS_FREE_CANCELLATION` before the start, or any hold, pays nothing; later, the late fee is
taken from the card hold. A provider's or an admin's cancellation never costs the customer. A
completed booking is captured in full; a no-show takes the no-show fee. Cash bookings never touch
Stripe: the commission is owed at completion, and no fee can be collected.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, NotFound
from app.keys import BOOKINGS_REMIND, BOOKINGS_SETTLE
from app.outbox import add_job
from app.services import audit
from app.services.bookings import notices
from app.services.bookings.effects import Effects, record
from app.services.bookings.moves import BookingMoved, BookingState, move
from app.services.payments.intents import HOLD_SECURED
from app.services.payments.policy import cancellation_fee
from app.services.ride_moves import BY_SYSTEM, Mover
from app.settings import Settings
from models import Booking, BookingStatus, Payment
from models.booking_states import ADMIN, AFTER_START, CUSTOMER, PROVIDER
from models.errors import InvalidTransition

#: A job may run this much before its due time (clocks of two machines) and still act.
CLOCK_TOLERANCE = timedelta(seconds=1)
HOLD_EXPIRED_REASON = "the hold expired before the booking was confirmed"


@dataclass(frozen=True)
class Caller:
    """Who asks: an account's id and role (`customer`, `driver`, `admin`), and for an operator at the
    CLI, its audit identity."""

    id: uuid.UUID | None
    role: str
    operator: audit.Operator | None = None


def load_booking(session: Session, booking_id: uuid.UUID, caller: Caller | None = None, *,
                 for_update: bool = False) -> Booking:
    """The booking (`NotFound` if it does not exist or is another's: ids leak nothing)."""
    query = select(Booking).where(Booking.id == booking_id)
    booking = session.scalar(query.with_for_update() if for_update else query)
    if booking is None or (caller is not None and party_of(caller, booking) is None):
        raise NotFound("No such booking.")
    return booking


def party_of(caller: Caller, booking: Booking) -> str | None:
    """The caller's part in the booking: its customer, its provider, an admin; None for others."""
    if caller.role == ADMIN:
        return ADMIN
    if caller.id == booking.customer_id and caller.role == CUSTOMER:
        return CUSTOMER
    if caller.id == booking.provider_id and caller.role == "driver":
        return PROVIDER
    return None


def _move(session: Session, effects: Effects, booking: Booking, target: BookingStatus, by: Mover,
          now: datetime, reason: str | None = None) -> BookingMoved:
    moved = move(BookingState.of(booking), target, by=by, at=now, reason=reason)
    session.execute(update(Booking).where(Booking.id == booking.id, Booking.status == booking.status)
                    .values(status=target.value, updated_at=now))
    booking.status, booking.updated_at = target.value, now
    record(session, effects, moved)
    return moved


def _settle(session: Session, booking: Booking) -> None:
    add_job(session, BOOKINGS_SETTLE, str(booking.id),
            dedupe_key=f"booking:{booking.id}:settle:{booking.status}")


def _payment(session: Session, booking: Booking) -> Payment:
    payment = session.scalar(select(Payment).where(Payment.booking_id == booking.id).with_for_update())
    assert payment is not None, "every booking has its payment"
    return payment


# --- confirmation -------------------------------------------------------------------------------------
def confirm(session: Session, settings: Settings, caller: Caller, booking_id: uuid.UUID, *, now: datetime,
            effects: Effects) -> Booking:
    """The customer confirms its hold: at once for cash or a card hold already authorized; otherwise
    `bookings.settle` re-reads the PaymentIntent at Stripe and confirms when it is authorized."""
    booking = load_booking(session, booking_id, caller, for_update=True)
    if party_of(caller, booking) != CUSTOMER:  # its provider or an admin: may see it, not confirm it
        raise Forbidden("Only the booking's customer confirms it.")
    if booking.status == BookingStatus.CONFIRMED.value:
        return booking  # a repeated confirm answers the same
    if booking.status == BookingStatus.HELD.value and booking.hold_expires_at <= now:
        raise InvalidTransition(BookingStatus.EXPIRED.value, BookingStatus.CONFIRMED.value,
                                "This hold has expired; book the slot again.")
    if booking.status != BookingStatus.HELD.value:
        raise InvalidTransition(booking.status, BookingStatus.CONFIRMED.value)
    payment = _payment(session, booking)
    if booking.payment_method == "cash" or payment.status in HOLD_SECURED:
        confirmed(session, settings, booking, Mover(CUSTOMER, caller.id), now=now, effects=effects)
    else:
        add_job(session, BOOKINGS_SETTLE, str(booking.id), dedupe_key=f"booking:{booking.id}:settle:confirm")
    return booking


def confirmed(session: Session, settings: Settings, booking: Booking, by: Mover, *, now: datetime,
              effects: Effects) -> BookingMoved:
    """Move a HELD booking (locked) to CONFIRMED; both parties told; the reminders scheduled."""
    moved = _move(session, effects, booking, BookingStatus.CONFIRMED, by, now)
    booking.confirmed_at = now
    session.execute(update(Booking).where(Booking.id == booking.id).values(confirmed_at=now))
    notices.confirmed(session, booking, settings.twilio)
    for offset_s in settings.bookings.reminders_s:
        due = booking.starts_at - timedelta(seconds=offset_s)
        if due > now:  # a reminder already past at confirmation would say the wrong thing
            add_job(session, BOOKINGS_REMIND, str(booking.id), offset_s, due_at=due,
                    dedupe_key=f"booking:{booking.id}:remind:{offset_s}")
    return moved


# --- the end of a booking ---------------------------------------------------------------------------
def fee_owed(settings: Settings, booking: Booking, party: str, target: BookingStatus, now: datetime) -> int:
    """What the customer owes for this end of the booking, by policy (0: all released)."""
    if booking.payment_method != "card" or booking.status != BookingStatus.CONFIRMED.value:
        return 0
    rate = Decimal(0)
    if target == BookingStatus.NO_SHOW:
        rate = settings.bookings.no_show_fee_rate
    elif target == BookingStatus.CANCELLED and party == CUSTOMER:
        late = booking.starts_at - now < timedelta(seconds=settings.bookings.free_cancellation_s)
        rate = settings.bookings.late_cancellation_fee_rate if late else Decimal(0)
    return cancellation_fee(booking.amount, rate, booking.currency) if rate else 0


def end(session: Session, settings: Settings, caller: Caller, booking_id: uuid.UUID, target: BookingStatus, *,
        now: datetime, effects: Effects, reason: str | None = None) -> Booking:
    """Cancel, complete or mark a no-show, as the caller's party may (`InvalidTransition` if not)."""
    booking = load_booking(session, booking_id, caller, for_update=True)
    party = party_of(caller, booking)
    assert party is not None
    _check_timing(booking, party, target, now)
    fee = fee_owed(settings, booking, party, target, now)
    before = booking.status
    payment = _payment(session, booking)
    _move(session, effects, booking, target, Mover(party, caller.id), now, reason)
    if target != BookingStatus.COMPLETED:
        payment.cancellation_fee, payment.cancelled_from = fee, before
    _settle(session, booking)
    if target == BookingStatus.CANCELLED or fee:
        was_confirmed = before == BookingStatus.CONFIRMED.value
        notices.ended(session, booking, by_role=party, fee=fee, reason=reason, was_confirmed=was_confirmed,
                      settings=settings.twilio)
    if party == ADMIN:
        audit.record(session, caller.operator or audit.Operator(ADMIN, account_id=caller.id),
                     f"booking.{target.value.lower()}", target_type="booking", target_id=booking.id,
                     details={"from": before, "reason": reason, "fee": fee})
    return booking


def _check_timing(booking: Booking, party: str, target: BookingStatus, now: datetime) -> None:
    """What the start decides: a customer never completes nor marks a no-show (403: it may see the
    booking, not act on it so), nothing is completed or missed before the start, and a customer
    can't cancel once the slot has begun (the provider marks a no-show instead)."""
    if target in AFTER_START and party == CUSTOMER:
        raise Forbidden("Only the provider (or support) completes a booking or marks a no-show.")
    if target in AFTER_START and now < booking.starts_at:
        raise Conflict("This booking has not started yet.",
                       details={"reason": "NOT_STARTED", "start": booking.starts_at.isoformat()})
    if target == BookingStatus.CANCELLED and party == CUSTOMER and now >= booking.starts_at \
            and booking.status == BookingStatus.CONFIRMED.value:
        raise Conflict("This booking has started; it can no longer be cancelled.",
                       details={"reason": "STARTED", "start": booking.starts_at.isoformat()})


class HoldNotDue(Exception):
    """A hold's expiry job ran before its `holdExpiresAt` (clocks apart): retried, not dropped."""


def expire(session: Session, settings: Settings, booking_id: uuid.UUID, *, now: datetime,
           effects: Effects) -> bool:
    """`bookings.expire_hold`: a hold still HELD at its `holdExpiresAt` is EXPIRED, the time freed,
    and `bookings.settle` releases the card hold. A hold whose card was authorized in time (the
    webhook recorded it, its settle has not run yet) is CONFIRMED instead. A booking confirmed,
    cancelled or already expired meanwhile, or a job delivered twice, changes nothing; a job early
    by more than the clock tolerance raises `HoldNotDue`, and its retry comes back later."""
    booking = session.scalar(select(Booking).where(Booking.id == booking_id).with_for_update())
    if booking is None or booking.status != BookingStatus.HELD.value:
        return False
    if booking.hold_expires_at > now + CLOCK_TOLERANCE:
        raise HoldNotDue(f"booking {booking_id} holds until {booking.hold_expires_at.isoformat()}")
    payment = _payment(session, booking)
    if booking.payment_method == "card" and payment.status in HOLD_SECURED:
        confirmed(session, settings, booking, BY_SYSTEM, now=now, effects=effects)
        return False
    _move(session, effects, booking, BookingStatus.EXPIRED, BY_SYSTEM, now, HOLD_EXPIRED_REASON)
    payment.cancellation_fee = 0
    _settle(session, booking)
    return True
