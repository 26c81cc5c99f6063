"""What the payment services ask of a payment provider: the `PaymentGateway` protocol, and the
provider-neutral states it answers with.

`app.adapters.stripe_gateway.StripeGateway` is the real one (the stripe SDK); the unit tests use a
hand-written in-memory fake (`tests/unit/fakes.py`). Every call that changes something takes an
idempotency key fixed by the caller; failures come out as `ProviderError` (`transient` when a
retry may pass). Statuses are Stripe's PaymentIntent statuses (`requires_capture`, `succeeded`…).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class HoldRequest:
    """A manual-capture destination charge of the fare to the driver's connected account, the
    platform's fee kept back."""

    amount: int
    currency: str
    application_fee: int
    destination: str
    #: What is paid for: a ride or a booking (Stripe's metadata and description name it).
    ride_id: str | None = None
    booking_id: str | None = None


@dataclass(frozen=True)
class IntentState:
    id: str
    status: str
    amount: int
    amount_capturable: int
    amount_received: int
    currency: str
    client_secret: str | None
    latest_charge: str | None
    application_fee_amount: int | None
    last_error: str | None


@dataclass(frozen=True)
class ChargeState:
    id: str
    payment_intent: str | None
    amount: int
    amount_captured: int
    amount_refunded: int

    @property
    def refunded_of_captured(self) -> int:
        """What was refunded of the captured money: Stripe counts the part of an authorization that
        was never captured (a partial capture, a released hold) in `amount_refunded` too."""
        if not self.amount_captured:
            return 0
        return max(0, self.amount_refunded - (self.amount - self.amount_captured))


@dataclass(frozen=True)
class AccountState:
    id: str
    charges_enabled: bool
    payouts_enabled: bool


@dataclass(frozen=True)
class RefundState:
    id: str
    amount: int
    status: str


class WebhookVerifier(Protocol):
    def verify_webhook(self, payload: bytes, signature: str | None) -> None:
        """Check a webhook's signature on its raw body; `InvalidSignature` if it doesn't verify,
        is too old, is missing, or webhooks are not configured."""


class PaymentGateway(WebhookVerifier, Protocol):
    # --- connected accounts (drivers) ---------------------------------------------------------
    async def create_express_account_async(self, *, email: str, driver_id: str,
                                           idempotency_key: str) -> str: ...

    async def onboarding_link_async(self, account_id: str) -> str: ...

    def retrieve_account(self, account_id: str) -> AccountState: ...

    # --- holds: PaymentIntents with manual capture --------------------------------------------
    def create_hold(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState: ...

    async def create_hold_async(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState: ...

    def retrieve_intent(self, intent_id: str) -> IntentState: ...

    def capture(self, intent_id: str, *, amount: int, application_fee: int,
                idempotency_key: str) -> IntentState: ...

    def cancel(self, intent_id: str, *, idempotency_key: str) -> IntentState: ...

    async def cancel_async(self, intent_id: str, *, idempotency_key: str) -> IntentState: ...

    # --- refunds ----------------------------------------------------------------------------------
    def refund(self, intent_id: str, *, amount: int, ride_id: str, idempotency_key: str) -> RefundState:
        """Refund `amount`, taking it back from the driver's transfer and the platform's fee pro rata."""
        ...

    def retrieve_charge(self, charge_id: str) -> ChargeState: ...
