"""Payments: the fare held on the card at accept, captured at completion, released or refunded.

Policy (README, "Payments"):
- **Commission** = the region's rate times the fare, **rounded down** to a valid amount of the
  currency (`app.currencies`: a multiple of 10 in TND, of 100 in ISK): the platform never takes more
  than its stated rate; the driver gets the rest. Card rides: Stripe's
  `application_fee_amount` on a destination charge to the driver's Connect account.
- **Hold** (`payments.authorize`) when a card ride's bid is accepted: a manual-capture
  PaymentIntent the customer confirms with its `clientSecret` (`POST /payments/{rideId}/intent`,
  `app.services.payment_setup`, which also creates drivers' Connect accounts).
  A driver whose Connect account can't take charges and payouts can't be accepted for a card ride.
  The driver can't set off (DRIVER_ARRIVING) until the hold is authorized (409 `CONFLICT`,
  `details.reason` `PAYMENT_NOT_AUTHORIZED`); a hold not authorized `PAYMENT_HOLD_TIMEOUT` seconds
  after the accept cancels the ride (`rides.expire_hold`, `app.services.ride_expiry`).
- **Capture** (`payments.capture`) when the ride is COMPLETED.
- **Cancelled** (`payments.cancel`): before the driver set off (PENDING_BIDS, BID_ACCEPTED) the hold
  is released in full. From DRIVER_ARRIVING on, a **cancellation fee** (`PAYMENT_CANCELLATION_FEE_RATE`
  times the fare, 20 % by default, rounded down the same way) is captured from the hold and the rest
  released; the commission applies to the fee. A hold the customer never confirmed is simply cancelled.
- **Refunds** (`payments.refund`, from an admin, or made in Stripe's dashboard and learnt from
  `charge.refunded`) come back from the driver's transfer and the platform's fee pro rata: the
  platform's part of the refunded total is its fee's share of it rounded up (`platform_refunded`),
  from cumulative totals, so partial refunds never add up to more than the fee nor drift.
- **Cash** rides never touch Stripe: at completion the commission is recorded as owed by the driver.

Ledger: append-only entries, each written once by its dedupe key; for every card ride the entries
sum to what Stripe captured minus what it refunded (`ledger_balance`). Every Stripe call carries an
idempotency key fixed by the ride and the operation, and every job re-reads Stripe's state rather
than trusting the order of events, so a job delivered twice — or a webhook before its job — acts once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import msgspec
from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import currencies
from app.adapters.payment_gateway import HoldRequest, IntentState, PaymentGateway, WebhookVerifier
from app.errors import Conflict, NotFound, PaymentsDisabled, ProviderError, ValidationFailed
from app.keys import (
    PAYMENTS_AUTHORIZE,
    PAYMENTS_CANCEL,
    PAYMENTS_CAPTURE,
    PAYMENTS_HANDLE_EVENT,
    PAYMENTS_REFUND,
    RIDES_EXPIRE_HOLD,
    ride_room,
)
from app.logging import get_logger
from app.outbox import INSERT_JOB, add_job, add_job_async
from app.services.notifications import payment_failed
from app.settings import Settings
from app.statements import StatementPool
from app.timestamps import rfc3339
from models import (
    Driver,
    LedgerEntry,
    LedgerKind,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Region,
    Ride,
    RideStatus,
    StripeEvent,
)

log = get_logger("payments")

Emit = Callable[[str, dict[str, Any], "str | list[str]"], None]
AfterCommit = Callable[[Callable[[], None]], None]

#: A card ride's money is secured: held on the card, or already taken (captured early, e.g. from
#: Stripe's dashboard). Until then its driver may not set off, and the hold timeout cancels it.
HOLD_SECURED = frozenset({PaymentStatus.AUTHORIZED.value, PaymentStatus.CAPTURED.value})

#: Cancelled from one of these, a card ride pays the cancellation fee (the driver had set off).
FEE_AFTER = frozenset({RideStatus.DRIVER_ARRIVING, RideStatus.PICKUP_ARRIVED, RideStatus.LOADING,
                       RideStatus.IN_TRANSIT, RideStatus.DROPOFF_ARRIVED})


def commission(amount: int, rate: Decimal, currency: str) -> int:
    """The platform's share of `amount`, rounded down to a valid amount of the currency (a multiple
    of 10 in TND, of 100 in ISK): never more than the stated rate; the driver gets the rest."""
    return currencies.of(currency).floor(Decimal(amount) * rate)


def cancellation_fee(amount: int, rate: Decimal, currency: str) -> int:
    """The fee captured from the hold of a ride cancelled late, rounded down to a valid amount."""
    return currencies.of(currency).floor(Decimal(amount) * rate)


def platform_refunded(fee: int, captured: int, refunded: int, currency: str) -> int:
    """The platform's part of the first `refunded` of `captured` (both cumulative): its fee's share,
    `fee * refunded / captured`, rounded UP to a valid amount, so that the platform never keeps more
    than its rate of what was finally paid, and never gives back more than it took (at a full refund
    it is the whole fee). Computed from totals, so a run of partial refunds never drifts."""
    if captured <= 0 or fee <= 0 or refunded <= 0:
        return 0
    share = currencies.of(currency).ceil_ratio(fee * min(refunded, captured), captured)
    return min(share, fee)


@dataclass(frozen=True)
class RefundSplit:
    driver: int
    platform: int


def split_refund(*, refunded_before: int, refunded_total: int, captured: int, fee: int,
                 platform_before: int, currency: str) -> RefundSplit:
    """Who gives back the step from `refunded_before` to `refunded_total`: the platform what
    `platform_refunded` of the new total still asks of it beyond `platform_before` (what it already
    gave back), the driver the rest."""
    step = refunded_total - refunded_before
    due = platform_refunded(fee, captured, refunded_total, currency)
    platform = min(step, max(0, due - platform_before))
    return RefundSplit(driver=step - platform, platform=platform)



def payment_event(payment: Payment, *, status: str | None = None) -> dict[str, Any]:
    """The `payment:update` payload: `{rideId, status, amount, currency}` (+ `at`, `captured`, `refunded`)."""
    return {"rideId": str(payment.ride_id), "status": status or payment.status, "amount": payment.amount,
            "currency": payment.currency, "captured": payment.amount_captured,
            "refunded": payment.amount_refunded, "at": rfc3339(datetime.now(UTC))}


def _fee_taken(state: IntentState, payment: Payment) -> int:
    """The platform's fee on a captured intent: what Stripe reports, else what we asked for."""
    reported = state.application_fee_amount
    return reported if reported is not None else payment.application_fee


def _emit_update(payment: Payment, after_commit: AfterCommit, emit: Emit, *,
                 status: str | None = None) -> None:
    payload = payment_event(payment, status=status)
    after_commit(lambda: emit("payment:update", payload, ride_room(payment.ride_id)))


# --- in the API's transactions ----------------------------------------------------------------
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


def hold_key(ride_id: uuid.UUID | str) -> str:
    """The idempotency key of a ride's hold (the job and the intent route send the same)."""
    return f"ride:{ride_id}:hold"


# --- earnings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Earnings:
    totals: list[dict[str, Any]]
    entries: list[LedgerEntry]


async def earnings(session: AsyncSession, driver_id: uuid.UUID, *, limit: int = 100) -> Earnings:
    sums = (await session.execute(
        select(LedgerEntry.currency, LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.driver_id == driver_id).group_by(LedgerEntry.currency, LedgerEntry.kind)
    )).all()
    by_currency: dict[str, dict[str, int]] = {}
    for currency, kind, total in sums:
        by_currency.setdefault(currency, {})[kind] = int(total)
    totals = []
    for currency, kinds in sorted(by_currency.items()):
        earned = kinds.get(LedgerKind.DRIVER_EARNING, 0)
        refunded = -kinds.get(LedgerKind.DRIVER_REFUND, 0)
        owed = kinds.get(LedgerKind.CASH_COMMISSION_OWED, 0)
        totals.append({"currency": currency, "earnings": earned, "refunds": refunded,
                       "cashCommissionOwed": owed, "net": earned - refunded - owed})
    entries = list((await session.scalars(
        select(LedgerEntry).where(LedgerEntry.driver_id == driver_id,
                                  LedgerEntry.kind.in_([LedgerKind.DRIVER_EARNING, LedgerKind.DRIVER_REFUND,
                                                        LedgerKind.CASH_COMMISSION_OWED]))
        .order_by(LedgerEntry.id.desc()).limit(limit)
    )).all())
    return Earnings(totals=totals, entries=entries)


# --- webhooks (API side): verify, store once, enqueue ------------------------------------------
class _EventHead(msgspec.Struct):
    id: str
    type: str
    account: str | None = None


_STORE_EVENT: Final = """
WITH stored AS (
    INSERT INTO stripe_events (id, type, account, payload, received_at)
    VALUES (%(id)s, %(type)s, %(account)s, CAST(%(payload)s AS jsonb), %(now)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
""" + INSERT_JOB + """
SELECT %(message_id)s, """ + PAYMENTS_HANDLE_EVENT.sql + """, jsonb_build_array(stored.id), '{}'::jsonb,
       '{}'::jsonb, %(now)s, %(now)s
FROM stored
RETURNING 1
"""


async def store_event(statements: StatementPool, payload: bytes) -> bool:
    """Store a verified event once by its id and enqueue its handling; False for a duplicate.

    One statement in autocommit: the event and its job's outbox row are written together or not
    at all, and a replayed event id writes nothing.
    """
    try:
        head = msgspec.json.decode(payload, type=_EventHead)
    except msgspec.DecodeError as exc:
        raise ValidationFailed("The event is not a Stripe event.", details={"body": str(exc)}) from exc
    row = await statements.fetch_one(_STORE_EVENT, {
        "id": head.id, "type": head.type, "account": head.account, "payload": payload.decode("utf-8"),
        "now": datetime.now(UTC), "message_id": uuid.uuid4(),
    })
    return row is not None


async def receive_event(verifier: WebhookVerifier, statements: StatementPool, payload: bytes,
                        signature: str | None) -> bool:
    """A webhook: verified on its raw body (`InvalidSignature`, nothing stored), then `store_event`."""
    verifier.verify_webhook(payload, signature)
    return await store_event(statements, payload)


# --- in the jobs -----------------------------------------------------------------------------
def hold_params_of(payment: Payment) -> HoldRequest:
    """The ride's hold: the fare, to the driver's connected account, the platform's fee kept back."""
    if not payment.stripe_account_id:
        raise Conflict("The driver has no Connect account.", details={"driverId": str(payment.driver_id)})
    return HoldRequest(ride_id=str(payment.ride_id), amount=payment.amount, currency=payment.currency,
                       application_fee=payment.application_fee, destination=payment.stripe_account_id)


INTENT_STATUSES = {
    "requires_payment_method": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_action": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "processing": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_capture": PaymentStatus.AUTHORIZED,
}
#: Statuses a PaymentIntent's pre-capture state may overwrite (never a captured or closed one).
OPEN_STATUSES = {PaymentStatus.PENDING.value, PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
         PaymentStatus.AUTHORIZED.value}


def _apply_intent(payment: Payment, state: IntentState) -> None:
    payment.payment_intent_id = state.id
    if state.client_secret:
        payment.client_secret = state.client_secret
    mapped = INTENT_STATUSES.get(state.status)
    now = datetime.now(UTC)
    if mapped is not None and payment.status in OPEN_STATUSES:
        payment.move_to(mapped, now)
    payment.last_error = state.last_error
    payment.updated_at = now


def _lock_payment(session: Session, ride_id: uuid.UUID) -> Payment | None:
    return session.scalar(select(Payment).where(Payment.ride_id == ride_id).with_for_update())


def _ledger(session: Session, payment: Payment, kind: LedgerKind, amount: int, *, key: str,
            reference: str | None) -> None:
    session.execute(insert(LedgerEntry).values(
        ride_id=payment.ride_id, driver_id=payment.driver_id, kind=kind.value, amount=amount,
        currency=payment.currency, reference=reference, dedupe_key=key,
    ).on_conflict_do_nothing(index_elements=["dedupe_key"]))


def _record_capture(session: Session, payment: Payment, captured: int, fee: int) -> None:
    """Stripe captured `captured` (of which `fee` is the platform's): ledger it once."""
    if payment.amount_captured >= captured and payment.status != PaymentStatus.AUTHORIZED.value:
        return
    reference = payment.payment_intent_id
    _ledger(session, payment, LedgerKind.DRIVER_EARNING, captured - fee,
            key=f"ride:{payment.ride_id}:capture:driver", reference=reference)
    _ledger(session, payment, LedgerKind.PLATFORM_COMMISSION, fee,
            key=f"ride:{payment.ride_id}:capture:platform", reference=reference)
    payment.move_to(PaymentStatus.CAPTURED, datetime.now(UTC))
    payment.amount_captured = captured
    log.info("payments.captured", ride_id=str(payment.ride_id), amount=captured, fee=fee)


def _platform_totals(session: Session, ride_id: uuid.UUID) -> tuple[int, int]:
    """(the fee the platform took, what of it was refunded so far), from the ride's ledger."""
    def total(kind: LedgerKind) -> Any:
        return func.coalesce(func.sum(case((LedgerEntry.kind == kind.value, LedgerEntry.amount),
                                           else_=0)), 0)

    fee, refunded = session.execute(
        select(total(LedgerKind.PLATFORM_COMMISSION), total(LedgerKind.PLATFORM_REFUND))
        .where(LedgerEntry.ride_id == ride_id)
    ).one()
    return int(fee), -int(refunded)


def _sync_refunds(session: Session, payment: Payment, refunded_total: int, charge_id: str) -> bool:
    """Bring the ledger up to Stripe's cumulative refunded amount for the charge (once per step),
    split by `split_refund` against the fee and the platform refunds the ledger already holds."""
    delta = refunded_total - payment.amount_refunded
    if delta <= 0:
        return False
    fee, platform_before = _platform_totals(session, payment.ride_id)
    split = split_refund(refunded_before=payment.amount_refunded, refunded_total=refunded_total,
                         captured=payment.amount_captured, fee=fee, platform_before=platform_before,
                         currency=payment.currency)
    key = f"ride:{payment.ride_id}:refunded_to:{refunded_total}"
    _ledger(session, payment, LedgerKind.DRIVER_REFUND, -split.driver, key=f"{key}:driver",
            reference=charge_id)
    _ledger(session, payment, LedgerKind.PLATFORM_REFUND, -split.platform, key=f"{key}:platform",
            reference=charge_id)
    payment.move_to(PaymentStatus.REFUNDED if refunded_total >= payment.amount_captured
                    else PaymentStatus.PARTIALLY_REFUNDED, datetime.now(UTC))
    payment.amount_refunded = refunded_total
    log.info("payments.refunded", ride_id=str(payment.ride_id), amount=delta, total=refunded_total)
    return True


def _payment_failed(session: Session, settings: Settings, payment: Payment, reason: str | None) -> None:
    """Tell the customer once per failed PaymentIntent (a retry on a new intent is told again)."""
    log.info("payments.failed", ride_id=str(payment.ride_id), reason=reason or "declined")
    payment_failed(session, ride_id=payment.ride_id, customer_id=payment.customer_id,
                   amount=payment.amount, currency=payment.currency,
                   failure_key=payment.payment_intent_id or "no-intent", settings=settings.twilio)


@dataclass(frozen=True)
class JobEnv:
    """What the payment jobs need besides their session."""

    settings: Settings
    gateway: Callable[[], PaymentGateway]
    after_commit: AfterCommit
    emit: Emit


def _move(payment: Payment, status: PaymentStatus, env: JobEnv) -> None:
    """Set the payment's status and tell the ride's room, after commit."""
    payment.move_to(status, datetime.now(UTC))
    _emit_update(payment, env.after_commit, env.emit)


def authorize(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """Hold the fare (once): a manual-capture PaymentIntent, keyed by the ride."""
    payment = _lock_payment(session, ride_id)
    if payment is None or payment.method != PaymentMethod.CARD.value:
        return "skipped"
    if payment.payment_intent_id is not None or payment.status != PaymentStatus.PENDING.value:
        return "done"
    ride_status = session.scalar(select(Ride.status).where(Ride.id == ride_id))
    if ride_status in (RideStatus.CANCELLED, RideStatus.COMPLETED):
        return "skipped"  # `payments.cancel` / `payments.capture` decide what happens now
    state = env.gateway().create_hold(hold_params_of(payment), idempotency_key=hold_key(ride_id))
    _apply_intent(payment, state)
    _emit_update(payment, env.after_commit, env.emit)
    log.info("payments.hold_created", ride_id=str(ride_id), intent=state.id, status=state.status)
    return payment.status


def capture(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """The ride is COMPLETED: capture the fare (card) or record the commission owed (cash)."""
    payment = _lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    if payment.method == PaymentMethod.CASH.value:
        if payment.status == PaymentStatus.PENDING.value:
            _ledger(session, payment, LedgerKind.CASH_COMMISSION_OWED, payment.application_fee,
                    key=f"ride:{ride_id}:cash_commission", reference=None)
            _move(payment, PaymentStatus.CASH_DUE, env)
        return payment.status
    if payment.status == PaymentStatus.CAPTURED.value or payment.amount_captured:
        return payment.status
    gateway = env.gateway()
    if payment.payment_intent_id is None:
        _apply_intent(payment, gateway.create_hold(hold_params_of(payment),
                                                   idempotency_key=hold_key(ride_id)))
    assert payment.payment_intent_id is not None
    state = gateway.retrieve_intent(payment.payment_intent_id)
    if state.status == "requires_capture":
        state = gateway.capture(state.id, amount=payment.amount, application_fee=payment.application_fee,
                                idempotency_key=f"ride:{ride_id}:capture")
    if state.status == "succeeded":
        _record_capture(session, payment, state.amount_received, _fee_taken(state, payment))
        _emit_update(payment, env.after_commit, env.emit)
        return payment.status
    # never authorized: the customer did not confirm the card (or it was declined)
    payment.move_to(PaymentStatus.FAILED, datetime.now(UTC))
    payment.last_error = state.last_error or f"not authorized (PaymentIntent {state.status})"
    _payment_failed(session, env.settings, payment, payment.last_error)
    _emit_update(payment, env.after_commit, env.emit)
    log.warning("payments.capture_impossible", ride_id=str(ride_id), intent_status=state.status)
    return payment.status


def cancel(session: Session, env: JobEnv, ride_id: uuid.UUID) -> str:
    """The ride is CANCELLED: release the hold, or capture the cancellation fee (policy above)."""
    payment = _lock_payment(session, ride_id)
    if payment is None:
        return "skipped"
    if payment.method == PaymentMethod.CASH.value:
        if payment.status == PaymentStatus.PENDING.value:
            _move(payment, PaymentStatus.CANCELLED, env)
        return payment.status
    if payment.status not in OPEN_STATUSES:
        return payment.status  # already released, captured or failed
    if payment.payment_intent_id is None:
        _move(payment, PaymentStatus.CANCELLED, env)  # nothing was ever held
        return payment.status
    gateway = env.gateway()
    state = gateway.retrieve_intent(payment.payment_intent_id)
    fee_due = payment.cancelled_from in {s.value for s in FEE_AFTER}
    fee_rate = env.settings.stripe.cancellation_fee_rate
    fee = cancellation_fee(payment.amount, fee_rate, payment.currency) if fee_due else 0
    if state.status == "requires_capture" and fee > 0:
        fee_commission = commission(fee, Decimal(payment.commission_rate), payment.currency)
        state = gateway.capture(state.id, amount=fee, application_fee=fee_commission,
                                idempotency_key=f"ride:{ride_id}:cancellation_fee")
        _record_capture(session, payment, state.amount_received, fee_commission)
        log.info("payments.cancellation_fee", ride_id=str(ride_id), fee=fee)
    elif state.status == "succeeded":
        _record_capture(session, payment, state.amount_received, _fee_taken(state, payment))
    elif state.status != "canceled":
        state = gateway.cancel(state.id, idempotency_key=f"ride:{ride_id}:release")
    if state.status == "canceled":
        payment.move_to(PaymentStatus.RELEASED, datetime.now(UTC))
        log.info("payments.released", ride_id=str(ride_id))
    _emit_update(payment, env.after_commit, env.emit)
    return payment.status


def refund(session: Session, env: JobEnv, ride_id: uuid.UUID, request_id: str, amount: int | None) -> str:
    """Refund (part of) a captured payment; the request id keys the Stripe call (one refund per request)."""
    payment = _lock_payment(session, ride_id)
    if payment is None or payment.payment_intent_id is None or payment.amount_captured <= 0:
        return "skipped"
    refundable = payment.amount_captured - payment.amount_refunded
    if refundable <= 0:
        return payment.status
    gateway = env.gateway()
    state = gateway.retrieve_intent(payment.payment_intent_id)
    try:
        gateway.refund(state.id, amount=min(amount or refundable, refundable), ride_id=str(ride_id),
                       idempotency_key=f"ride:{ride_id}:refund:{request_id}")
    except ProviderError as exc:
        if exc.transient:
            raise
        log.warning("payments.refund_refused", ride_id=str(ride_id), error=exc.message)
    if state.latest_charge:
        charge = gateway.retrieve_charge(state.latest_charge)
        if _sync_refunds(session, payment, charge.refunded_of_captured, charge.id):
            _emit_update(payment, env.after_commit, env.emit)
    return payment.status


# --- webhook events (job side) -----------------------------------------------------------------
def handle_event(session: Session, env: JobEnv, event_id: str) -> str:
    """Act on a stored event by re-reading the object's current state at Stripe (order-proof)."""
    event = session.scalar(select(StripeEvent).where(StripeEvent.id == event_id).with_for_update())
    if event is None:
        return "unknown"
    if event.processed_at is not None:
        return "done"
    obj = (event.payload.get("data") or {}).get("object") or {}
    kind = event.type
    outcome = "ignored"
    if kind.startswith("payment_intent."):
        outcome = _on_intent(session, env, str(obj.get("id")), (obj.get("metadata") or {}).get("ride_id"))
    elif kind == "charge.refunded":
        outcome = _on_charge_refunded(session, env, str(obj.get("id")))
    elif kind == "charge.dispute.created":
        outcome = _on_dispute(session, env, obj)
    elif kind == "account.updated":
        outcome = _on_account(session, env, str(obj.get("id")))
    event.processed_at = datetime.now(UTC)
    log.info("payments.event_handled", event_id=event_id, type=kind, outcome=outcome)
    return outcome


def _payment_for_intent(session: Session, intent_id: str, ride_id: str | None) -> Payment | None:
    payment = session.scalar(select(Payment).where(Payment.payment_intent_id == intent_id).with_for_update())
    if payment is None and ride_id:
        try:
            payment = _lock_payment(session, uuid.UUID(ride_id))
        except ValueError:
            return None
    return payment


def _on_intent(session: Session, env: JobEnv, intent_id: str, ride_id: str | None) -> str:
    payment = _payment_for_intent(session, intent_id, ride_id)
    if payment is None:
        return "no payment"
    state = env.gateway().retrieve_intent(intent_id)
    before = (payment.status, payment.last_error)
    if state.status == "succeeded":
        _record_capture(session, payment, state.amount_received, _fee_taken(state, payment))
    elif state.status == "canceled":
        if payment.status in OPEN_STATUSES:
            payment.move_to(PaymentStatus.RELEASED, datetime.now(UTC))
    else:
        _apply_intent(payment, state)
        if state.last_error and before[1] != state.last_error:
            _payment_failed(session, env.settings, payment, state.last_error)
    if (payment.status, payment.last_error) != before:
        _emit_update(payment, env.after_commit, env.emit)
    return payment.status


def _on_charge_refunded(session: Session, env: JobEnv, charge_id: str) -> str:
    gateway = env.gateway()
    charge = gateway.retrieve_charge(charge_id)
    if charge.payment_intent is None:
        return "no payment"
    payment = _payment_for_intent(session, charge.payment_intent, None)
    if payment is None:
        return "no payment"
    if payment.amount_captured == 0 and charge.amount_captured:
        state = gateway.retrieve_intent(charge.payment_intent)
        if state.status == "succeeded":
            _record_capture(session, payment, state.amount_received,
                            state.application_fee_amount or payment.application_fee)
    if _sync_refunds(session, payment, charge.refunded_of_captured, charge.id):
        _emit_update(payment, env.after_commit, env.emit)
    return payment.status


def _on_dispute(session: Session, env: JobEnv, dispute: dict[str, Any]) -> str:
    intent_id = dispute.get("payment_intent")
    payment = _payment_for_intent(session, str(intent_id), None) if intent_id else None
    if payment is None:
        return "no payment"
    if not payment.disputed:
        payment.disputed = True
        payment.updated_at = datetime.now(UTC)
        log.warning("payments.disputed", ride_id=str(payment.ride_id), dispute=dispute.get("id"),
                    amount=dispute.get("amount"), reason=dispute.get("reason"))
        _emit_update(payment, env.after_commit, env.emit, status="disputed")
    return "disputed"


def _on_account(session: Session, env: JobEnv, account_id: str) -> str:
    state = env.gateway().retrieve_account(account_id)
    session.execute(update(Driver).where(Driver.stripe_account_id == account_id)
                    .values(charges_enabled=state.charges_enabled, payouts_enabled=state.payouts_enabled))
    return f"charges={state.charges_enabled} payouts={state.payouts_enabled}"


# --- admin -------------------------------------------------------------------------------------
async def request_refund(session: AsyncSession, ride_id: uuid.UUID, amount: int | None) -> str:
    payment = await session.scalar(select(Payment).where(Payment.ride_id == ride_id))
    if payment is None:
        raise NotFound("This ride has no payment.")
    if payment.method != PaymentMethod.CARD.value or payment.amount_captured - payment.amount_refunded <= 0:
        raise Conflict("Nothing captured is left to refund.",
                       details={"captured": payment.amount_captured, "refunded": payment.amount_refunded})
    request_id = uuid.uuid4().hex
    await add_job_async(session, PAYMENTS_REFUND, str(ride_id), request_id, amount)
    return request_id


def ledger_balance(session: Session, ride_id: uuid.UUID) -> int:
    """The sum of a ride's money entries (cash commission owed excluded): Stripe's net capture."""
    return int(session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.ride_id == ride_id, LedgerEntry.kind != LedgerKind.CASH_COMMISSION_OWED.value)
    ) or 0)

