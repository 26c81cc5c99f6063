"""`bookings.settle`: make a booking's payment follow the booking, at Stripe, whatever the order of
events. It reads the booking (locked) and its payment (locked), then does what the booking's
status calls for, with the same decisions as a ride's payment (`app.services.payments.settlement`):

- `HELD` (card): create the hold once (a manual-capture PaymentIntent, idempotency key
  `booking:<id>:hold`), else re-read it; once it is authorized, and the hold has not lapsed, the
  booking is CONFIRMED by the system;
- `COMPLETED`: capture the price (card) or record the commission the provider owes (cash);
- `CANCELLED`, `EXPIRED`, `NO_SHOW`: capture the fee the booking's end left on the payment
  (`cancellation_fee`, 0 for most) and release the rest; a hold never confirmed is cancelled.

Delivered twice, or racing a webhook (which writes this job too), it acts once: the booking's
move is a compare-and-set and every Stripe call is keyed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.logging import get_logger
from app.services.bookings import lifecycle
from app.services.bookings.effects import Effects
from app.services.payments import settlement
from app.services.payments.intents import HOLD_SECURED, OPEN_STATUSES
from app.services.payments.operations import JobEnv, carry_out
from app.services.ride_moves import BY_SYSTEM
from models import Booking, BookingStatus, Payment

log = get_logger("bookings")

ENDED = frozenset({BookingStatus.CANCELLED.value, BookingStatus.EXPIRED.value, BookingStatus.NO_SHOW.value})


def settle(session: Session, env: JobEnv, booking_id: uuid.UUID, *, now: datetime, effects: Effects) -> str:
    """Bring the booking's payment to what its status calls for; answer what was done."""
    booking = session.scalar(select(Booking).where(Booking.id == booking_id).with_for_update())
    payment = session.scalar(select(Payment).where(Payment.booking_id == booking_id).with_for_update())
    if booking is None or payment is None:
        return "unknown"
    if booking.status == BookingStatus.HELD.value:
        return _held(session, env, booking, payment, now=now, effects=effects)
    if booking.status == BookingStatus.COMPLETED.value:
        return carry_out(session, env, payment, settlement.take_fare(payment, env.gateway))
    if booking.status in ENDED:
        if payment.cancellation_fee is None:
            payment.cancellation_fee = 0
        return carry_out(session, env, payment, settlement.close(payment, env.gateway, Decimal(0)))
    return payment.status  # CONFIRMED: the hold stays until the booking ends


def _held(session: Session, env: JobEnv, booking: Booking, payment: Payment, *, now: datetime,
          effects: Effects) -> str:
    if booking.payment_method != "card":
        return "cash"
    result = carry_out(session, env, payment, settlement.hold(payment, None, env.gateway))
    if result == "done" and payment.payment_intent_id and payment.status in OPEN_STATUSES:
        state = env.gateway().retrieve_intent(payment.payment_intent_id)
        result = carry_out(session, env, payment, settlement.follow_intent(payment, state))
    if payment.status in HOLD_SECURED:
        if booking.hold_expires_at <= now:
            log.info("bookings.authorized_too_late", booking_id=str(booking.id))
            return "lapsed"  # the expiry job releases it
        lifecycle.confirmed(session, env.settings, booking, BY_SYSTEM, now=now, effects=effects)
        log.info("bookings.confirmed", booking_id=str(booking.id), by="payment")
        return "confirmed"
    return result
