"""A ride's hold at Stripe, pure: its idempotency key, what it asks for, and how its PaymentIntent's
state is recorded on the payment."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

from app.adapters.payment_gateway import HoldRequest, IntentState
from app.errors import Conflict
from models import Payment, PaymentStatus
from models.payment_states import OPEN

#: A card ride's money is secured: held on the card, or already taken (captured early, e.g. from
#: Stripe's dashboard). Until then its driver may not set off, and the hold timeout cancels it.
HOLD_SECURED: Final = frozenset({PaymentStatus.AUTHORIZED.value, PaymentStatus.CAPTURED.value})

#: A PaymentIntent's pre-capture status → the payment's.
INTENT_STATUSES: Final = {
    "requires_payment_method": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_action": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "processing": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_capture": PaymentStatus.AUTHORIZED,
}
#: Statuses a PaymentIntent's pre-capture state may overwrite (never a captured or closed one).
OPEN_STATUSES: Final = {status.value for status in OPEN}


def hold_key(ride_id: uuid.UUID | str) -> str:
    """The idempotency key of a ride's hold (the job and the intent route send the same)."""
    return f"ride:{ride_id}:hold"


def hold_key_of(payment: Payment) -> str:
    """The idempotency key of a payment's hold: `hold_key` for a ride's, `booking:<id>:hold` for a
    booking's."""
    return f"{payment.subject}:hold"


def hold_params_of(payment: Payment) -> HoldRequest:
    """The hold of a ride or a booking: the price, to the driver's connected account, the platform's
    fee kept back."""
    if not payment.stripe_account_id:
        raise Conflict("The driver has no Connect account.", details={"driverId": str(payment.driver_id)})
    return HoldRequest(amount=payment.amount, currency=payment.currency,
                       application_fee=payment.application_fee, destination=payment.stripe_account_id,
                       ride_id=None if payment.ride_id is None else str(payment.ride_id),
                       booking_id=None if payment.booking_id is None else str(payment.booking_id))


def apply_intent(payment: Payment, state: IntentState) -> None:
    """Record the PaymentIntent and, on an open payment, its pre-capture state."""
    payment.payment_intent_id = state.id
    if state.client_secret:
        payment.client_secret = state.client_secret
    mapped = INTENT_STATUSES.get(state.status)
    now = datetime.now(UTC)
    if mapped is not None and payment.status in OPEN_STATUSES:
        payment.move_to(mapped, now)
    payment.last_error = state.last_error
    payment.updated_at = now


def fee_taken(state: IntentState, payment: Payment) -> int:
    """The platform's fee on a captured intent: what Stripe reports, else what we asked for."""
    reported = state.application_fee_amount
    return reported if reported is not None else payment.application_fee
