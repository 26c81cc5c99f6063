"""Hand-written in-memory fakes for unit tests (no I/O).

`FakeGateway` is a `PaymentGateway` that keeps PaymentIntents, charges, refunds and connected accounts
in dictionaries and answers as Stripe does where our logic depends on it: a repeated idempotency key
gets the stored answer, a partial capture releases the rest (counted as refunded on the charge), a
capture or refund in the wrong state is refused (`ProviderError`, not transient). Test helpers play
the customer (`confirm`) and Stripe's dashboard (`capture_from_dashboard`, `refund_from_dashboard`).
The adapter itself is tested against the HTTP fake (`tests/fakes/stripe_server.py`).
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from app.adapters.payment_gateway import (
    AccountState,
    ChargeState,
    HoldRequest,
    IntentState,
    PaymentGateway,
    RefundState,
)
from app.errors import InvalidSignature, ProviderError
from models import Payment, PaymentStatus

T = TypeVar("T")

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


@dataclass
class _Charge:
    id: str
    intent: str
    amount: int
    amount_captured: int = 0
    amount_refunded: int = 0


class FakeGateway:
    """An in-memory Stripe (see the module's docstring)."""

    def __init__(self) -> None:
        self.intents: dict[str, IntentState] = {}
        self.holds: dict[str, HoldRequest] = {}
        self.charges: dict[str, _Charge] = {}
        self.accounts: dict[str, AccountState] = {}
        self.refunds: list[RefundState] = []
        self.calls: Counter[str] = Counter()
        self._answers: dict[str, Any] = {}
        self._failing: dict[str, ProviderError] = {}

    # --- what a test sets up or looks at -----------------------------------------------------
    def fail_next(self, operation: str, *, transient: bool) -> None:
        """The next call of `operation` (`create_hold`, `refund`…) fails: Stripe down (`transient`)
        or refusing."""
        self._failing[operation] = ProviderError("Stripe failed (fake).", transient=transient)

    def confirm(self, intent_id: str, *, declined: bool = False) -> None:
        """The customer confirms the card: the fare is held, or the card is declined."""
        intent = self.intents[intent_id]
        if declined:
            self.intents[intent_id] = replace(intent, last_error="card_declined")
            return
        charge = _Charge(id=_id("ch"), intent=intent_id, amount=intent.amount)
        self.charges[charge.id] = charge
        self.intents[intent_id] = replace(intent, status="requires_capture", amount_capturable=intent.amount,
                                          latest_charge=charge.id, last_error=None)

    def capture_from_dashboard(self, intent_id: str) -> None:
        self._capture(intent_id, self.intents[intent_id].amount, self.holds[intent_id].application_fee)

    def refund_from_dashboard(self, intent_id: str, amount: int) -> None:
        self._refund(intent_id, amount)

    def charge_of(self, intent_id: str) -> ChargeState:
        charge_id = self.intents[intent_id].latest_charge
        assert charge_id is not None
        return self.retrieve_charge(charge_id)

    # --- the PaymentGateway ------------------------------------------------------------------
    def _once(self, operation: str, key: str | None, answer: Callable[[], T]) -> T:
        """Count the call; fail it if asked; a key seen before gets the stored answer (as Stripe)."""
        self.calls[operation] += 1
        if operation in self._failing:
            raise self._failing.pop(operation)
        if key is not None and key in self._answers:
            return cast(T, self._answers[key])
        result = answer()
        if key is not None:
            self._answers[key] = result
        return result

    def create_hold(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState:
        return self._once("create_hold", idempotency_key, lambda: self._new_intent(hold))

    async def create_hold_async(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState:
        return self.create_hold(hold, idempotency_key=idempotency_key)

    def retrieve_intent(self, intent_id: str) -> IntentState:
        return self._once("retrieve_intent", None, lambda: self.intents[intent_id])

    def capture(self, intent_id: str, *, amount: int, application_fee: int,
                idempotency_key: str) -> IntentState:
        def take() -> IntentState:
            return self._capture(intent_id, amount, application_fee)
        return self._once("capture", idempotency_key, take)

    def cancel(self, intent_id: str, *, idempotency_key: str) -> IntentState:
        return self._once("cancel", idempotency_key, lambda: self._cancel(intent_id))

    async def cancel_async(self, intent_id: str, *, idempotency_key: str) -> IntentState:
        return self.cancel(intent_id, idempotency_key=idempotency_key)

    def refund(self, intent_id: str, *, amount: int, ride_id: str, idempotency_key: str) -> RefundState:
        return self._once("refund", idempotency_key, lambda: self._refund(intent_id, amount))

    def retrieve_charge(self, charge_id: str) -> ChargeState:
        charge = self.charges[charge_id]
        return ChargeState(id=charge.id, payment_intent=charge.intent, amount=charge.amount,
                           amount_captured=charge.amount_captured, amount_refunded=charge.amount_refunded)

    async def create_express_account_async(self, *, email: str, driver_id: str, idempotency_key: str) -> str:
        def create() -> str:
            account = AccountState(id=_id("acct"), charges_enabled=False, payouts_enabled=False)
            self.accounts[account.id] = account
            return account.id
        return self._once("create_account", idempotency_key, create)

    async def onboarding_link_async(self, account_id: str) -> str:
        return f"https://connect.example/onboarding/{account_id}"

    def retrieve_account(self, account_id: str) -> AccountState:
        return self.accounts[account_id]

    def verify_webhook(self, payload: bytes, signature: str | None) -> None:
        if signature != "signed":
            raise InvalidSignature("The Stripe-Signature does not verify (or is too old).")

    # --- Stripe's side -----------------------------------------------------------------------
    def _new_intent(self, hold: HoldRequest) -> IntentState:
        intent_id = _id("pi")
        self.holds[intent_id] = hold
        self.intents[intent_id] = IntentState(
            id=intent_id, status="requires_payment_method", amount=hold.amount, amount_capturable=0,
            amount_received=0, currency=hold.currency, client_secret=f"{intent_id}_secret",
            latest_charge=None, application_fee_amount=hold.application_fee, last_error=None)
        return self.intents[intent_id]

    def _refused(self, what: str) -> ProviderError:
        return ProviderError(f"Stripe refused {what} (fake).", transient=False)

    def _capture(self, intent_id: str, amount: int, fee: int) -> IntentState:
        intent = self.intents[intent_id]
        if intent.status != "requires_capture" or amount > intent.amount_capturable:
            raise self._refused("the capture")
        charge = self.charges[intent.latest_charge or ""]
        charge.amount_captured = amount
        charge.amount_refunded = charge.amount - amount  # the rest is released, shown as refunded
        self.intents[intent_id] = replace(intent, status="succeeded", amount_capturable=0,
                                          amount_received=amount, application_fee_amount=fee)
        return self.intents[intent_id]

    def _cancel(self, intent_id: str) -> IntentState:
        intent = self.intents[intent_id]
        if intent.status in ("succeeded", "canceled"):
            raise self._refused("the release")
        if intent.latest_charge:
            charge = self.charges[intent.latest_charge]
            charge.amount_refunded = charge.amount
        self.intents[intent_id] = replace(intent, status="canceled", amount_capturable=0)
        return self.intents[intent_id]

    def _refund(self, intent_id: str, amount: int) -> RefundState:
        intent = self.intents[intent_id]
        if intent.status != "succeeded":
            raise self._refused("the refund")
        charge = self.charges[intent.latest_charge or ""]
        released = charge.amount - charge.amount_captured
        if amount > charge.amount_captured - (charge.amount_refunded - released):
            raise self._refused("the refund")
        charge.amount_refunded += amount
        refund = RefundState(id=_id("re"), amount=amount, status="succeeded")
        self.refunds.append(refund)
        return refund


def card_payment(*, amount: int = 2500, fee: int = 375, currency: str = "EUR",
                 rate: str = "0.15") -> Payment:
    """A card ride's payment just opened at the accept (not in any database)."""
    return Payment(id=uuid.uuid4(), ride_id=uuid.uuid4(), customer_id=uuid.uuid4(), driver_id=uuid.uuid4(),
                   method="card", status=PaymentStatus.PENDING.value, amount=amount, currency=currency,
                   commission_rate=Decimal(rate), application_fee=fee, stripe_account_id="acct_driver",
                   payment_intent_id=None, client_secret=None, cancelled_from=None, amount_captured=0,
                   amount_refunded=0, disputed=False, last_error=None, updated_at=datetime.now(UTC))


def cash_payment(*, amount: int = 4000, fee: int = 600) -> Payment:
    payment = card_payment(amount=amount, fee=fee)
    payment.method, payment.stripe_account_id = "cash", None
    return payment


def _conforms(fake: FakeGateway) -> PaymentGateway:
    return fake  # mypy (`mypy tests/unit/fakes.py`): the fake is a PaymentGateway
