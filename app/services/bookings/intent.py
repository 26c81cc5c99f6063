"""`POST /bookings/{id}/intent`: the customer's `clientSecret` for a card booking's hold, creating
the PaymentIntent now if `bookings.settle` hasn't yet — the same three steps as a ride's
(`app.services.payment_setup`): read, call Stripe outside any transaction with the booking's
idempotency key (so the job and any caller get the same PaymentIntent), record by compare-and-set.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.payment_gateway import PaymentGateway
from app.db import short_transaction
from app.errors import Conflict, Forbidden
from app.logging import get_logger
from app.services.bookings.lifecycle import Caller, load_booking, party_of
from app.services.payment_setup import IntentView, Sessions, record_intent
from app.services.payments.intents import hold_key_of, hold_params_of
from models import Booking, BookingStatus, Payment
from models.booking_states import CUSTOMER

log = get_logger("bookings")


def _payable(session: Session, caller: Caller, booking_id: uuid.UUID) -> Payment:
    booking: Booking = load_booking(session, booking_id, caller)
    if party_of(caller, booking) != CUSTOMER:  # its provider or an admin: may see it, not pay for it
        raise Forbidden("Only the booking's customer pays for it.")
    if booking.payment_method != "card":
        raise Conflict("This booking is paid in cash.", details={"paymentMethod": "cash"})
    if booking.status != BookingStatus.HELD.value:
        raise Conflict("A payment can be set up only while the booking is HELD.",
                       details={"reason": "PAYMENT_CLOSED", "status": booking.status})
    payment = session.scalar(select(Payment).where(Payment.booking_id == booking_id))
    assert payment is not None, "every booking has its payment"
    return payment


async def client_intent(sessions: Sessions, gateway: PaymentGateway, caller: Caller, booking_id: uuid.UUID,
                        *, lock_timeout_ms: int) -> IntentView:
    async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
        payment = await session.run_sync(lambda s: _payable(s, caller, booking_id))
        if payment.client_secret is not None:
            return IntentView(client_secret=payment.client_secret, status=payment.status)
        hold, key = hold_params_of(payment), hold_key_of(payment)
    state = await gateway.create_hold_async(hold, idempotency_key=key)
    async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
        recorded = await record_intent(session, Payment.booking_id == booking_id, state)
    if recorded is not None:
        return recorded
    await gateway.cancel_async(state.id, idempotency_key=f"booking:{booking_id}:release")
    log.info("bookings.intent_abandoned", booking_id=str(booking_id), intent=state.id)
    raise Conflict("A payment can be set up only while the booking is HELD.",
                   details={"reason": "PAYMENT_CLOSED"})
