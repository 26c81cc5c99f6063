"""Payments in the API's transactions: may the driver be paid, the payment opened at the accept, the
hold required before setting off, the jobs a ride's move calls for, and an admin's refund request.

Nothing here calls Stripe: each use case writes its `payments.*` job in the caller's transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound, PaymentsDisabled
from app.keys import PAYMENTS_AUTHORIZE, PAYMENTS_CANCEL, PAYMENTS_CAPTURE, PAYMENTS_REFUND, RIDES_EXPIRE_HOLD
from app.outbox import add_job, add_job_async
from app.services.payments.intents import HOLD_SECURED
from app.services.payments.policy import commission
from app.settings import Settings
from models import Driver, Payment, PaymentMethod, PaymentStatus, Region, Ride, RideStatus


async def check_driver_can_be_paid(session: AsyncSession, settings: Settings, ride: Ride,
                                   driver_id: uuid.UUID) -> None:
    """Before accepting a card ride's bid: payments on, the driver's Connect account ready."""
    if ride.payment_method != PaymentMethod.CARD:
        return
    if not settings.stripe.enabled:
        raise PaymentsDisabled()
    row = (await session.execute(
        select(Driver.stripe_account_id, Driver.charges_enabled, Driver.payouts_enabled)
        .where(Driver.user_id == driver_id)
    )).first()
    if row is None or not row[0] or not (row[1] and row[2]):
        raise Conflict(
            "This driver can't be paid by card yet (Stripe payouts not enabled); accept another bid "
            "or book the ride for cash.",
            details={"reason": "DRIVER_PAYOUTS_NOT_ENABLED", "driverId": str(driver_id)},
        )


async def open_payment(session: AsyncSession, ride: Ride, *, driver_id: uuid.UUID, amount: int,
                       currency: str, hold_timeout_s: int) -> None:
    """In the accept's transaction: the ride's payment row and, for a card ride, its hold job and
    the hold's deadline (`rides.expire_hold`, delayed `hold_timeout_s`)."""
    now = datetime.now(UTC)
    row = (await session.execute(
        select(Region.commission_rate, Driver.stripe_account_id)
        .select_from(Region).join(Driver, Driver.user_id == driver_id).where(Region.code == ride.region_code)
    )).one()
    rate, account = Decimal(row[0]), row[1]
    card = ride.payment_method == PaymentMethod.CARD
    await session.execute(insert(Payment).values(
        id=uuid.uuid4(), ride_id=ride.id, customer_id=ride.customer_id, driver_id=driver_id,
        method=ride.payment_method.value, status=PaymentStatus.PENDING.value, amount=amount,
        currency=currency, commission_rate=rate, application_fee=commission(amount, rate, currency),
        stripe_account_id=account if card else None, created_at=now, updated_at=now,
    ))
    if card:
        await add_job_async(session, PAYMENTS_AUTHORIZE, str(ride.id))
        await add_job_async(session, RIDES_EXPIRE_HOLD, str(ride.id),
                            delay_ms=hold_timeout_s * 1000)


async def require_hold_secured(session: AsyncSession, ride: Ride) -> None:
    """Before a card ride's driver sets off: its hold is authorized (409 `PAYMENT_NOT_AUTHORIZED`).

    The payment row is read `FOR SHARE` under the ride's lock, so a webhook changing it waits.
    """
    if ride.payment_method != PaymentMethod.CARD:
        return
    status = await session.scalar(select(Payment.status).where(Payment.ride_id == ride.id)
                                  .with_for_update(read=True))
    if status not in HOLD_SECURED:
        raise Conflict(
            "The customer's card payment is not authorized yet; wait for it before setting off.",
            details={"reason": "PAYMENT_NOT_AUTHORIZED", "paymentStatus": status},
        )


async def after_ride_move(session: AsyncSession, ride: Ride, before: RideStatus, target: RideStatus) -> None:
    """In a status move's transaction: COMPLETED → capture; CANCELLED → release or fee, by policy."""
    if ride.accepted_bid_id is None:
        return
    if target == RideStatus.COMPLETED:
        await add_job_async(session, PAYMENTS_CAPTURE, str(ride.id))
    elif target == RideStatus.CANCELLED:
        await session.execute(update(Payment).where(Payment.ride_id == ride.id)
                              .values(cancelled_from=before.value, updated_at=datetime.now(UTC)))
        await add_job_async(session, PAYMENTS_CANCEL, str(ride.id))


def cancelled_by_system(session: Session, ride_id: uuid.UUID, before: RideStatus) -> None:
    """`after_ride_move`'s CANCELLED branch in a job's (sync) transaction: record where the ride was
    cancelled from (release vs fee) and enqueue `payments.cancel`."""
    session.execute(update(Payment).where(Payment.ride_id == ride_id)
                    .values(cancelled_from=before.value, updated_at=datetime.now(UTC)))
    add_job(session, PAYMENTS_CANCEL, str(ride_id))


async def request_refund(session: AsyncSession, ride_id: uuid.UUID, amount: int | None) -> str:
    """An admin's refund of (part of) what a card ride captured: `payments.refund`, keyed by the
    request id returned."""
    payment = await session.scalar(select(Payment).where(Payment.ride_id == ride_id))
    if payment is None:
        raise NotFound("This ride has no payment.")
    if payment.method != PaymentMethod.CARD.value or payment.amount_captured - payment.amount_refunded <= 0:
        raise Conflict("Nothing captured is left to refund.",
                       details={"captured": payment.amount_captured, "refunded": payment.amount_refunded})
    request_id = uuid.uuid4().hex
    await add_job_async(session, PAYMENTS_REFUND, str(ride_id), request_id, amount)
    return request_id
