"""What the payment jobs decide, without a database: each takes the ride's payment (locked by the
job), asks the `PaymentGateway` what it needs, changes the payment by its state machine, and returns
an `Outcome`: the ledger entries to write, the customer to tell, the update to emit.

Every decision re-reads Stripe's state rather than trusting the order of events, and every Stripe
call carries an idempotency key fixed by the ride and the operation, so a job delivered twice — or
a webhook before its job — acts once. `app.services.payments.operations` and `.webhooks` load,
call, and carry the outcome out in the job's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from app.adapters.payment_gateway import ChargeState, IntentState, PaymentGateway
from app.errors import ProviderError
from app.logging import get_logger
from app.services.payments.intents import OPEN_STATUSES, apply_intent, fee_taken, hold_key_of, hold_params_of
from app.services.payments.ledger import Entry, PlatformTotals
from app.services.payments.policy import commission, late_cancellation_fee, split_refund
from models import LedgerKind, Payment, PaymentMethod, PaymentStatus, RideStatus

log = get_logger("payments")

#: The gateway, made on first use (a cash ride never needs one).
Gateway = Callable[[], PaymentGateway]


@dataclass
class Outcome:
    """What a decision leaves to its job, besides the payment's own changes."""

    #: What the job answers: the payment's status, or why it did nothing (`skipped`, `done`).
    result: str
    entries: list[Entry] = field(default_factory=list)
    #: Tell the customer the payment failed, for this reason (once per PaymentIntent).
    failure: str | None = None
    #: Emit `payment:update` to the ride's room after commit.
    update: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def _ids(payment: Payment) -> dict[str, str]:
    """The log fields naming what the payment is for."""
    if payment.ride_id is not None:
        return {"ride_id": str(payment.ride_id)}
    return {"booking_id": str(payment.booking_id)}


# --- the ledger's side of Stripe's answers ---------------------------------------------------------
def record_capture(payment: Payment, captured: int, fee: int) -> list[Entry]:
    """Stripe captured `captured` (of which `fee` is the platform's): its two entries, once."""
    if payment.amount_captured >= captured and payment.status != PaymentStatus.AUTHORIZED.value:
        return []
    key, reference = f"{payment.subject}:capture", payment.payment_intent_id
    payment.move_to(PaymentStatus.CAPTURED, _now())
    payment.amount_captured = captured
    log.info("payments.captured", **_ids(payment), amount=captured, fee=fee)
    return [Entry(LedgerKind.DRIVER_EARNING, captured - fee, f"{key}:driver", reference),
            Entry(LedgerKind.PLATFORM_COMMISSION, fee, f"{key}:platform", reference)]


def sync_refunds(payment: Payment, refunded_total: int, charge_id: str,
                 totals: PlatformTotals) -> list[Entry]:
    """Bring the payment up to Stripe's cumulative refunded amount for the charge (once per step),
    split by `split_refund` against the fee and the platform refunds the ledger already holds."""
    delta = refunded_total - payment.amount_refunded
    if delta <= 0:
        return []
    split = split_refund(refunded_before=payment.amount_refunded, refunded_total=refunded_total,
                         captured=payment.amount_captured, fee=totals.fee, platform_before=totals.refunded,
                         currency=payment.currency)
    key = f"{payment.subject}:refunded_to:{refunded_total}"
    full = refunded_total >= payment.amount_captured
    payment.move_to(PaymentStatus.REFUNDED if full else PaymentStatus.PARTIALLY_REFUNDED, _now())
    payment.amount_refunded = refunded_total
    log.info("payments.refunded", **_ids(payment), amount=delta, total=refunded_total)
    return [Entry(LedgerKind.DRIVER_REFUND, -split.driver, f"{key}:driver", charge_id),
            Entry(LedgerKind.PLATFORM_REFUND, -split.platform, f"{key}:platform", charge_id)]


# --- the jobs ------------------------------------------------------------------------------------
def hold(payment: Payment, ride_status: RideStatus | None, gateway: Gateway) -> Outcome:
    """`payments.authorize`: hold the fare (once), a manual-capture PaymentIntent keyed by the ride."""
    if payment.method != PaymentMethod.CARD.value:
        return Outcome("skipped")
    if payment.payment_intent_id is not None or payment.status != PaymentStatus.PENDING.value:
        return Outcome("done")
    if ride_status in (RideStatus.CANCELLED, RideStatus.COMPLETED):
        return Outcome("skipped")  # `payments.cancel` / `payments.capture` decide what happens now
    state = gateway().create_hold(hold_params_of(payment), idempotency_key=hold_key_of(payment))
    apply_intent(payment, state)
    log.info("payments.hold_created", **_ids(payment), intent=state.id, status=state.status)
    return Outcome(payment.status, update=True)


def take_fare(payment: Payment, gateway: Gateway) -> Outcome:
    """`payments.capture`, the ride COMPLETED: capture the fare (card) or record the commission the
    driver owes (cash)."""
    if payment.method == PaymentMethod.CASH.value:
        if payment.status != PaymentStatus.PENDING.value:
            return Outcome(payment.status)
        owed = Entry(LedgerKind.CASH_COMMISSION_OWED, payment.application_fee,
                     f"{payment.subject}:cash_commission", None)
        payment.move_to(PaymentStatus.CASH_DUE, _now())
        return Outcome(payment.status, [owed], update=True)
    if payment.status == PaymentStatus.CAPTURED.value or payment.amount_captured:
        return Outcome(payment.status)
    stripe = gateway()
    if payment.payment_intent_id is None:
        apply_intent(payment, stripe.create_hold(hold_params_of(payment),
                                                 idempotency_key=hold_key_of(payment)))
    assert payment.payment_intent_id is not None
    state = stripe.retrieve_intent(payment.payment_intent_id)
    if state.status == "requires_capture":
        state = stripe.capture(state.id, amount=payment.amount, application_fee=payment.application_fee,
                               idempotency_key=f"{payment.subject}:capture")
    if state.status == "succeeded":
        entries = record_capture(payment, state.amount_received, fee_taken(state, payment))
        return Outcome(payment.status, entries, update=True)
    # never authorized: the customer did not confirm the card (or it was declined)
    payment.move_to(PaymentStatus.FAILED, _now())
    payment.last_error = state.last_error or f"not authorized (PaymentIntent {state.status})"
    log.warning("payments.capture_impossible", **_ids(payment), intent_status=state.status)
    return Outcome(payment.status, failure=payment.last_error, update=True)


def close(payment: Payment, gateway: Gateway, fee_rate: Decimal) -> Outcome:
    """`payments.cancel`, the ride CANCELLED: release the hold, or capture the cancellation fee (a
    share `fee_rate` of the fare, once the driver had set off) and release the rest."""
    if payment.method == PaymentMethod.CASH.value:
        if payment.status != PaymentStatus.PENDING.value:
            return Outcome(payment.status)
        return _cancel_unheld(payment)
    if payment.status not in OPEN_STATUSES:
        return Outcome(payment.status)  # already released, captured or failed
    if payment.payment_intent_id is None:
        return _cancel_unheld(payment)  # nothing was ever held
    stripe = gateway()
    state = stripe.retrieve_intent(payment.payment_intent_id)
    fee = (payment.cancellation_fee if payment.cancellation_fee is not None
           else late_cancellation_fee(payment.amount, payment.currency, payment.cancelled_from, fee_rate))
    entries: list[Entry] = []
    if state.status == "requires_capture" and fee > 0:
        fee_commission = commission(fee, Decimal(payment.commission_rate), payment.currency)
        state = stripe.capture(state.id, amount=fee, application_fee=fee_commission,
                               idempotency_key=f"{payment.subject}:cancellation_fee")
        entries = record_capture(payment, state.amount_received, fee_commission)
        log.info("payments.cancellation_fee", **_ids(payment), fee=fee)
    elif state.status == "succeeded":
        entries = record_capture(payment, state.amount_received, fee_taken(state, payment))
    elif state.status != "canceled":
        state = stripe.cancel(state.id, idempotency_key=f"{payment.subject}:release")
    if state.status == "canceled":
        payment.move_to(PaymentStatus.RELEASED, _now())
        log.info("payments.released", **_ids(payment))
    return Outcome(payment.status, entries, update=True)


def _cancel_unheld(payment: Payment) -> Outcome:
    payment.move_to(PaymentStatus.CANCELLED, _now())
    return Outcome(payment.status, update=True)


def give_back(payment: Payment, gateway: Gateway, totals: PlatformTotals, request_id: str,
              amount: int | None) -> Outcome:
    """`payments.refund`: refund `amount` (else all that is left) of a captured payment, keyed by
    the request (one refund per request), then follow the charge's refunded total."""
    if payment.payment_intent_id is None or payment.amount_captured <= 0:
        return Outcome("skipped")
    refundable = payment.amount_captured - payment.amount_refunded
    if refundable <= 0:
        return Outcome(payment.status)
    stripe = gateway()
    state = stripe.retrieve_intent(payment.payment_intent_id)
    try:
        stripe.refund(state.id, amount=min(amount or refundable, refundable), ride_id=str(payment.ride_id),
                      idempotency_key=f"{payment.subject}:refund:{request_id}")
    except ProviderError as exc:
        if exc.transient:
            raise
        log.warning("payments.refund_refused", ride_id=str(payment.ride_id), error=exc.message)
    if not state.latest_charge:
        return Outcome(payment.status)
    charge = stripe.retrieve_charge(state.latest_charge)
    entries = sync_refunds(payment, charge.refunded_of_captured, charge.id, totals)
    return Outcome(payment.status, entries, update=bool(entries))


# --- the webhooks ----------------------------------------------------------------------------------
def follow_intent(payment: Payment, state: IntentState) -> Outcome:
    """A `payment_intent.*` event: apply the PaymentIntent's current state (re-read from Stripe)."""
    before = (payment.status, payment.last_error)
    failure = None
    entries: list[Entry] = []
    if state.status == "succeeded":
        entries = record_capture(payment, state.amount_received, fee_taken(state, payment))
    elif state.status == "canceled":
        if payment.status in OPEN_STATUSES:
            payment.move_to(PaymentStatus.RELEASED, _now())
    else:
        apply_intent(payment, state)
        if state.last_error and before[1] != state.last_error:
            failure = state.last_error
    changed = (payment.status, payment.last_error) != before
    return Outcome(payment.status, entries, failure=failure, update=changed)


def follow_charge(payment: Payment, charge: ChargeState, gateway: Gateway, totals: PlatformTotals) -> Outcome:
    """A `charge.refunded` event: the capture first if it was never recorded, then the refunds."""
    entries: list[Entry] = []
    if payment.amount_captured == 0 and charge.amount_captured and charge.payment_intent:
        state = gateway().retrieve_intent(charge.payment_intent)
        if state.status == "succeeded":
            entries = record_capture(payment, state.amount_received,
                                     state.application_fee_amount or payment.application_fee)
    refunds = sync_refunds(payment, charge.refunded_of_captured, charge.id, totals.plus(entries))
    return Outcome(payment.status, entries + refunds, update=bool(refunds))
