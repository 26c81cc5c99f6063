"""Stripe, through the official SDK: Connect accounts, held PaymentIntents, captures, refunds.

Every call that changes something carries an idempotency key fixed by the caller (derived from
the ride and the operation), so a retried, redelivered or replayed job gets Stripe's stored answer
instead of a second charge. `STRIPE_API_BASE` points the SDK elsewhere (the tests' local fake).
Errors come back as `ProviderError`: `transient` for network failures, 5xx and rate limits (the
job retries), not for a request Stripe refused (the job records the refusal).

`StripeGateway` is the `PaymentGateway` (`app.adapters.payment_gateway`) of every process.
`StripeWebhooks` checks webhook signatures with the webhook secret alone (a farm verifies them
before, and without, any API key); the gateway verifies through it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import stripe

from app.adapters.circuit import CircuitBreaker
from app.adapters.payment_gateway import AccountState, ChargeState, HoldRequest, IntentState, RefundState
from app.errors import InvalidSignature, PaymentsDisabled, ProviderError
from app.logging import get_logger
from app.settings import StripeSettings

log = get_logger("stripe")
webhook_log = get_logger("webhooks")

T = TypeVar("T")

_TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


def _field(obj: Any, name: str, default: Any = None) -> Any:
    try:
        value = obj[name]
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def intent_state(pi: Any) -> IntentState:
    error = _field(pi, "last_payment_error")
    charge = _field(pi, "latest_charge")
    return IntentState(
        id=pi["id"], status=pi["status"], amount=int(pi["amount"]),
        amount_capturable=int(_field(pi, "amount_capturable", 0)),
        amount_received=int(_field(pi, "amount_received", 0)),
        currency=str(pi["currency"]).upper(), client_secret=_field(pi, "client_secret"),
        latest_charge=charge if isinstance(charge, str) or charge is None else charge["id"],
        application_fee_amount=_field(pi, "application_fee_amount"),
        last_error=(_field(error, "code") or _field(error, "message")) if error else None,
    )


def _charge_state(charge: Any) -> ChargeState:
    pi = _field(charge, "payment_intent")
    return ChargeState(
        id=charge["id"], payment_intent=pi if isinstance(pi, str) or pi is None else pi["id"],
        amount=int(charge["amount"]), amount_captured=int(_field(charge, "amount_captured", 0)),
        amount_refunded=int(_field(charge, "amount_refunded", 0)),
    )


def _account_state(account: Any) -> AccountState:
    return AccountState(id=account["id"], charges_enabled=bool(_field(account, "charges_enabled", False)),
                        payouts_enabled=bool(_field(account, "payouts_enabled", False)))


def _translate(exc: stripe.StripeError, operation: str) -> ProviderError:
    transient = isinstance(exc, _TRANSIENT)
    code = getattr(exc, "code", None)
    log.warning("stripe.error", operation=operation, transient=transient, http_status=exc.http_status,
                code=code, error=str(exc.user_message or exc))
    error = ProviderError(f"Stripe refused {operation}: {exc.user_message or exc}", transient=transient,
                          details={"provider": "stripe", "code": code, "httpStatus": exc.http_status})
    error.logged = True
    return error


def hold_params(hold: HoldRequest) -> dict[str, Any]:
    """A manual-capture destination charge of the fare, the platform's fee kept back."""
    return {"amount": hold.amount, "currency": hold.currency.lower(), "capture_method": "manual",
            "transfer_data": {"destination": hold.destination},
            "application_fee_amount": hold.application_fee,
            **_subject(hold)}


def _subject(hold: HoldRequest) -> dict[str, Any]:
    """The metadata and description of a hold: the ride's, or the booking's."""
    if hold.ride_id is not None:
        return {"metadata": {"ride_id": hold.ride_id}, "description": f"Ride {hold.ride_id}"}
    return {"metadata": {"booking_id": hold.booking_id}, "description": f"Booking {hold.booking_id}"}


class StripeWebhooks:
    """Stripe's webhook signatures: HMAC-SHA256 of `t.payload` with the webhook secret, and the
    timestamp's tolerance (`STRIPE_WEBHOOK_TOLERANCE`)."""

    def __init__(self, settings: StripeSettings) -> None:
        self._secret = settings.webhook_secret
        self._tolerance_s = settings.webhook_tolerance_s

    def verify_webhook(self, payload: bytes, signature: str | None) -> None:
        """`InvalidSignature` (400) unless `signature` signs the raw `payload`, recently enough."""
        if not self._secret:
            raise InvalidSignature("Stripe webhooks are not enabled: set STRIPE_WEBHOOK_SECRET.")
        if not signature:
            raise InvalidSignature("The Stripe-Signature header is missing.")
        try:
            stripe.WebhookSignature.verify_header(payload.decode("utf-8", "replace"), signature,
                                                  self._secret, tolerance=self._tolerance_s)
        except stripe.SignatureVerificationError as exc:
            webhook_log.warning("webhooks.stripe_bad_signature", error=str(exc))
            raise InvalidSignature("The Stripe-Signature does not verify (or is too old).") from exc


class StripeGateway:
    """The SDK client for one process (thread-safe: the SDK keeps no per-call state)."""

    def __init__(self, settings: StripeSettings) -> None:
        if not settings.enabled:
            raise PaymentsDisabled()
        self._settings = settings
        self._webhooks = StripeWebhooks(settings)
        self.circuit = CircuitBreaker("stripe", failure_threshold=settings.circuit_failures,
                                      pause_s=settings.circuit_pause_s)
        bases: dict[str, str] = {}
        if settings.api_base:
            bases["api"] = settings.api_base
            bases["connect"] = settings.connect_base or settings.api_base
        elif settings.connect_base:
            bases["connect"] = settings.connect_base
        self._client = stripe.StripeClient(
            settings.secret_key, base_addresses=bases,  # type: ignore[arg-type]
            max_network_retries=settings.max_network_retries,
            http_client=stripe.HTTPXClient(timeout=settings.request_timeout_s, allow_sync_methods=True),
        )

    # --- calls ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guarded(self, operation: str) -> Iterator[None]:
        """One SDK call through the process's Stripe circuit (`CircuitOpen` while Stripe is paused);
        a Stripe error comes out as `ProviderError`."""
        self.circuit.guard()
        try:
            yield
        except stripe.StripeError as exc:
            error = _translate(exc, operation)
            self.circuit.failed(error)
            raise error from exc
        except BaseException:
            self.circuit.succeeded_or_release()
            raise
        self.circuit.succeeded()

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        with self._guarded(operation):
            return call()

    async def _call_async(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        with self._guarded(operation):
            return await call()

    # --- Connect -------------------------------------------------------------------------------
    def _account_params(self, email: str, driver_id: str) -> dict[str, Any]:
        return {"type": "express", "email": email, "country": self._settings.connect_country,
                "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
                "metadata": {"driver_id": driver_id}}

    async def create_express_account_async(self, *, email: str, driver_id: str, idempotency_key: str) -> str:
        v1 = self._client.v1
        account = await self._call_async("account creation", lambda: v1.accounts.create_async(
            self._account_params(email, driver_id), {"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return str(account["id"])

    async def onboarding_link_async(self, account_id: str) -> str:
        v1 = self._client.v1
        link = await self._call_async("onboarding link", lambda: v1.account_links.create_async({
            "account": account_id, "type": "account_onboarding",
            "refresh_url": self._settings.connect_refresh_url,
            "return_url": self._settings.connect_return_url,
        }))
        return str(link["url"])

    def retrieve_account(self, account_id: str) -> AccountState:
        v1 = self._client.v1
        return _account_state(self._call("account lookup", lambda: v1.accounts.retrieve(account_id)))

    # --- holds ---------------------------------------------------------------------------------
    def create_hold(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState:
        v1 = self._client.v1
        params = hold_params(hold)
        return intent_state(self._call("the hold", lambda: v1.payment_intents.create(
            params, {"idempotency_key": idempotency_key})))  # type: ignore[arg-type]

    async def create_hold_async(self, hold: HoldRequest, *, idempotency_key: str) -> IntentState:
        v1 = self._client.v1
        params = hold_params(hold)
        return intent_state(await self._call_async("the hold", lambda: v1.payment_intents.create_async(
            params, {"idempotency_key": idempotency_key})))  # type: ignore[arg-type]

    def retrieve_intent(self, intent_id: str) -> IntentState:
        return intent_state(self._call("PaymentIntent lookup",
                                       lambda: self._client.v1.payment_intents.retrieve(intent_id)))

    def capture(self, intent_id: str, *, amount: int, application_fee: int,
                idempotency_key: str) -> IntentState:
        v1 = self._client.v1
        return intent_state(self._call("the capture", lambda: v1.payment_intents.capture(
            intent_id, {"amount_to_capture": amount, "application_fee_amount": application_fee},
            {"idempotency_key": idempotency_key})))

    def cancel(self, intent_id: str, *, idempotency_key: str) -> IntentState:
        v1 = self._client.v1
        return intent_state(self._call("the release", lambda: v1.payment_intents.cancel(
            intent_id, {"cancellation_reason": "requested_by_customer"},
            {"idempotency_key": idempotency_key})))

    async def cancel_async(self, intent_id: str, *, idempotency_key: str) -> IntentState:
        v1 = self._client.v1
        return intent_state(await self._call_async("the release", lambda: v1.payment_intents.cancel_async(
            intent_id, {"cancellation_reason": "abandoned"}, {"idempotency_key": idempotency_key})))

    # --- refunds -------------------------------------------------------------------------------
    def refund(self, intent_id: str, *, amount: int, ride_id: str, idempotency_key: str) -> RefundState:
        """Refund `amount`, taking it back from the driver's transfer and the platform's fee pro rata."""
        v1 = self._client.v1
        refund = self._call("the refund", lambda: v1.refunds.create({
            "payment_intent": intent_id, "amount": amount, "reverse_transfer": True,
            "refund_application_fee": True, "metadata": {"ride_id": ride_id},
        }, {"idempotency_key": idempotency_key}))
        return RefundState(id=refund["id"], amount=int(refund["amount"]), status=str(refund["status"]))

    def retrieve_charge(self, charge_id: str) -> ChargeState:
        return _charge_state(self._call("charge lookup", lambda: self._client.v1.charges.retrieve(charge_id)))

    # --- webhooks ------------------------------------------------------------------------------
    def verify_webhook(self, payload: bytes, signature: str | None) -> None:
        self._webhooks.verify_webhook(payload, signature)
