"""What the web asks of Stripe on a user's behalf: a ride's hold (`clientSecret`) and a driver's
Connect onboarding link.

Stripe can be slow (up to `STRIPE_REQUEST_TIMEOUT` per try), so no database connection — and no row lock —
is held while it answers. Each use case runs in three steps:

1. a short transaction reads what the call needs (and answers at once if it was done before);
2. Stripe is called outside any transaction, with an idempotency key fixed by the object, so
   concurrent callers (and the `payments.authorize` job) get the same PaymentIntent / account;
3. a second short transaction records the answer by compare-and-set (only where nothing was
   recorded yet); a caller that loses the race answers with what the winner recorded.

Both transactions are `app.db.short_transaction`s: a lock wait longer than `DB_LOCK_TIMEOUT_MS`
answers 503 `SERVICE_UNAVAILABLE` (reason `LOCK_TIMEOUT`). These use cases own their transactions
(the exception to "the boundary commits"): the provider call has to sit between two of them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.adapters.payment_gateway import IntentState, PaymentGateway
from app.db import short_transaction
from app.errors import Conflict, NotFound
from app.logging import get_logger
from app.services.access import Principal
from app.services.payments import INTENT_STATUSES, OPEN_STATUSES, hold_key, hold_params_of
from app.services.rides import load_ride
from models import Driver, Payment, PaymentMethod, RideStatus, User

log = get_logger("payments")

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class IntentView:
    client_secret: str
    status: str


# --- the ride's hold --------------------------------------------------------------------------------
async def client_intent(sessions: Sessions, gateway: PaymentGateway, customer: Principal,
                        ride_id: uuid.UUID, *, lock_timeout_ms: int) -> IntentView:
    """The customer's `clientSecret` for the ride's hold, creating the hold now if the job hasn't.

    Same idempotency key and parameters as `payments.authorize`: whichever runs first creates the
    PaymentIntent, the others get the same one back from Stripe and converge on the recorded one.
    """
    async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
        payment = await _payable(session, customer, ride_id)
        if payment.client_secret is not None:
            return IntentView(client_secret=payment.client_secret, status=payment.status)
        hold = hold_params_of(payment)
    state = await gateway.create_hold_async(hold, idempotency_key=hold_key(ride_id))
    async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
        recorded = await record_intent(session, Payment.ride_id == ride_id, state)
    if recorded is not None:
        return recorded
    # The payment closed meanwhile (the ride was cancelled before any intent was recorded): the
    # intent just made would be nobody's, so it is released; nothing was confirmed on it.
    await gateway.cancel_async(state.id, idempotency_key=f"ride:{ride_id}:release")
    log.info("payments.intent_abandoned", ride_id=str(ride_id), intent=state.id)
    raise Conflict("A payment can be set up only while the ride is BID_ACCEPTED.",
                   details={"reason": "PAYMENT_CLOSED"})


async def _payable(session: AsyncSession, customer: Principal, ride_id: uuid.UUID) -> Payment:
    ride = await load_ride(session, customer, ride_id)
    if ride.payment_method != PaymentMethod.CARD:
        raise Conflict("This ride is paid in cash.", details={"paymentMethod": "cash"})
    if ride.status != RideStatus.BID_ACCEPTED:
        raise Conflict("A payment can be set up only while the ride is BID_ACCEPTED.",
                       details={"status": ride.status.value})
    payment = await session.scalar(select(Payment).where(Payment.ride_id == ride.id))
    if payment is None:
        raise NotFound("This ride has no payment.")
    return payment


async def record_intent(session: AsyncSession, subject: ColumnElement[bool],
                        state: IntentState) -> IntentView | None:
    """Compare-and-set: record the intent only on an open payment with no client secret yet (never
    over what the job or a concurrent caller recorded); else answer with what is recorded.
    None when the payment closed without an intent. (An open payment may take any intent state:
    `models.payment_states` allows those moves, tests/unit/test_payment_states.py checks it.)"""
    mapped = INTENT_STATUSES.get(state.status)
    row = (await session.execute(
        update(Payment)
        .where(subject, Payment.client_secret.is_(None),
               Payment.status.in_(OPEN_STATUSES),
               Payment.payment_intent_id.is_(None) | (Payment.payment_intent_id == state.id))
        .values(payment_intent_id=state.id, client_secret=state.client_secret,
                status=mapped.value if mapped is not None else Payment.status,
                last_error=state.last_error, updated_at=datetime.now(UTC))
        .returning(Payment.client_secret, Payment.status)
    )).first()
    if row is None:
        row = (await session.execute(select(Payment.client_secret, Payment.status).where(subject))).first()
        if row is None or row[0] is None:
            return None
    else:
        log.info("payments.hold_created", intent=state.id, status=state.status, by="intent_route")
    return IntentView(client_secret=row[0] or "", status=row[1])


# --- Connect onboarding ------------------------------------------------------------------------------
async def onboarding_link(sessions: Sessions, gateway: PaymentGateway, driver_id: uuid.UUID, *,
                          lock_timeout_ms: int) -> str:
    """The driver's Connect Express account (created once) and a fresh onboarding link."""
    async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
        row = (await session.execute(
            select(Driver.stripe_account_id, User.email).join(User, User.id == Driver.user_id)
            .where(Driver.user_id == driver_id)
        )).first()
    if row is None:
        raise NotFound("No driver has this id.")
    account_id, email = row
    if account_id is None:
        created = await gateway.create_express_account_async(
            email=email, driver_id=str(driver_id), idempotency_key=f"driver:{driver_id}:connect-account")
        async with short_transaction(sessions, lock_timeout_ms=lock_timeout_ms) as session:
            account_id = await _record_account(session, driver_id, created)
    return await gateway.onboarding_link_async(account_id)


async def _record_account(session: AsyncSession, driver_id: uuid.UUID, created: str) -> str:
    """Compare-and-set: the first account recorded for the driver stays its account."""
    stored = await session.scalar(
        update(Driver).where(Driver.user_id == driver_id, Driver.stripe_account_id.is_(None))
        .values(stripe_account_id=created).returning(Driver.stripe_account_id))
    if stored is not None:
        log.info("payments.connect_account_created", driver_id=str(driver_id), account=created)
        return stored
    recorded = await session.scalar(select(Driver.stripe_account_id).where(Driver.user_id == driver_id))
    if recorded is None:
        raise NotFound("No driver has this id.")
    if recorded != created:  # only if Stripe forgot the idempotency key (after 24 h)
        log.warning("payments.connect_account_duplicate", driver_id=str(driver_id), kept=recorded,
                    unused=created)
    return recorded
