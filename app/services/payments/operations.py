"""The payment jobs' use cases (`jobs/payments.py` calls them in its unit of work): lock the ride's
payment, let `settlement` decide with Stripe, and carry the outcome out in the transaction — the
ledger entries, the customer's `payment_failed`, and `payment:update` to the ride's room after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.payment_gateway import PaymentGateway
from app.keys import ride_room
from app.logging import get_logger
from app.services.notifications import booking_payment_failed, payment_failed
from app.services.payments import ledger, settlement
from app.services.payments.policy import cancellation_fee_rate
from app.settings import Settings
from app.timestamps import rfc3339
from models import Payment, Ride

log = get_logger("payments")

Emit = Callable[[str, dict[str, Any], "str | list[str]"], None]
AfterCommit = Callable[[Callable[[], None]], None]


@dataclass(frozen=True)
class JobEnv:
    """What the payment jobs need besides their session."""

    settings: Settings
    gateway: Callable[[], PaymentGateway]
    after_commit: AfterCommit
    emit: Emit


def payment_event(payment: Payment, *, status: str | None = None) -> dict[str, Any]:
    """The `payment:update` payload: `{rideId, status, amount, currency}` (+ `at`, `captured`, `refunded`)."""
    return {"rideId": str(payment.ride_id), "status": status or payment.status, "amount": payment.amount,
            "currency": payment.currency, "captured": payment.amount_captured,
            "refunded": payment.amount_refunded, "at": rfc3339(datetime.now(UTC))}


def emit_update(payment: Payment, env: JobEnv, *, status: str | None = None) -> None:
    """Tell the ride's room about the payment, after commit."""
    payload = payment_event(payment, status=status)
    env.after_commit(lambda: env.emit("payment:update", payload, ride_room(payment.ride_id)))


def lock_payment(session: Session, ride_id: uuid.UUID) -> Payment | None:
    return session.scalar(select(Payment).where(Payment.ride_id == ride_id).with_for_update())


def carry_out(session: Session, env: JobEnv, payment: Payment, outcome: settlement.Outcome) -> str:
    """Do in the job's transaction what a decision left to do; answer its result."""
    ledger.write(session, payment, outcome.entries)
    if outcome.failure is not None:
        # Told once per failed PaymentIntent (a retry on a new intent is told again).
        log.info("payments.failed", subject=payment.subject, reason=outcome.failure or "declined")
        failure_key = payment.payment_intent_id or "no-intent"
        if payment.ride_id is not None:
            payment_failed(session, ride_id=payment.ride_id, customer_id=payment.customer_id,
                           amount=payment.amount, currency=payment.currency, failure_key=failure_key,
                           settings=env.settings.twilio)
        else:
            assert payment.booking_id is not None
            booking_payment_failed(session, booking_id=payment.booking_id, customer_id=payment.customer_id,
                                   amount=payment.amount, currency=payment.currency,
                                   failure_key=failure_key, settings=env.settings.twilio)
    if outcome.update and payment.ride_id is not None:
        emit_update(payment, env)  # a booking's payment is told by its `booking:status`
    return outcome.result


def authorize(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """Hold the fare (once): a manual-capture PaymentIntent, keyed by the ride."""
    payment = lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    ride_status = session.scalar(select(Ride.status).where(Ride.id == ride_id))
    return carry_out(session, env, payment, settlement.hold(payment, ride_status, env.gateway))


def capture(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """The ride is COMPLETED: capture the fare (card) or record the commission owed (cash)."""
    payment = lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    return carry_out(session, env, payment, settlement.take_fare(payment, env.gateway))


def cancel(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """The ride is CANCELLED: release the hold, or capture the cancellation fee (by policy)."""
    payment = lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    outcome = settlement.close(payment, env.gateway, cancellation_fee_rate(env.settings))
    return carry_out(session, env, payment, outcome)


def refund(session: Session, env: JobEnv, ride_id: uuid.UUID, request_id: str, amount: int | None) -> str:
    """Refund (part of) a captured payment; the request id keys the Stripe call (one refund per request)."""
    payment = lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    totals = ledger.platform_totals(session, payment)
    outcome = settlement.give_back(payment, env.gateway, totals, request_id, amount)
    return carry_out(session, env, payment, outcome)
