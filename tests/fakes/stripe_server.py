"""A local fake of the Stripe v1 API (Connect Express, PaymentIntents, refunds, events) for tests.

The fake is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port, daemon thread). The real
``stripe`` SDK talks to it over HTTP, so its form encoding, headers, retries, response parsing and
error mapping (``CardError``, ``InvalidRequestError``, ``IdempotencyError``, ``APIError``...) stay
real::

    with FakeStripe() as fake:
        client = stripe.StripeClient(
            fake.api_key, base_addresses={"api": fake.base_url, "connect": fake.base_url}
        )
        pi = client.v1.payment_intents.create(
            {"amount": 1500, "currency": "usd", "capture_method": "manual",
             "payment_method": "pm_card_visa", "confirm": True},
            {"idempotency_key": "ride-42-auth"},
        )
        assert pi.status == "requires_capture"

Served (form-encoded requests, JSON bodies shaped like Stripe's objects and errors):

* ``POST /v1/accounts``, ``GET|POST /v1/accounts/{id}``, ``POST /v1/account_links`` (the link's
  ``url`` points at the fake: a GET on it completes onboarding and redirects to ``return_url``).
* ``POST /v1/payment_intents``, ``GET /v1/payment_intents/{id}``, ``.../confirm``, ``.../capture``,
  ``.../cancel``; test payment methods ``pm_card_visa`` (and any other ``pm_...``),
  ``pm_card_chargeDeclined*`` (402 ``card_error``) and ``pm_card_authenticationRequired``.
* ``POST /v1/refunds``, ``GET /v1/refunds/{id}``, ``GET /v1/charges/{id}``, ``GET /v1/events[/{id}]``.
* Unknown parameters -> 400 ``parameter_unknown``; unknown ids -> 404 ``resource_missing``; a
  wrong API key -> 401; idempotency like Stripe (replay with ``Idempotent-Replayed: true``, or 400
  ``idempotency_error`` when the same key comes with other parameters), scoped per API key and
  ``Stripe-Account``.

Test controls (thread-safe, under :attr:`FakeStripe.lock`): ``calls``, :meth:`FakeStripe.count`,
:meth:`FakeStripe.fail_next`, :meth:`FakeStripe.drop_response_next`, :meth:`FakeStripe.set_account`,
:meth:`FakeStripe.authenticate`, :meth:`FakeStripe.dispute`, :meth:`FakeStripe.make_event`,
:meth:`FakeStripe.slow_down` (a delay before matching requests run), :meth:`FakeStripe.hold` /
:meth:`FakeStripe.wait_held` / :meth:`FakeStripe.release` (park matching requests until released:
a Stripe as slow as a test needs, without sleeping on it),
``accounts`` / ``payment_intents`` / ``charges`` / ``refunds`` / ``events``, :meth:`FakeStripe.reset`;
webhook helpers :func:`sign_payload`, :func:`signed_webhook`, :func:`make_event` and
:func:`charge_dispute_event`.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import stripe

__all__ = [
    "DEFAULT_API_KEY",
    "FakeResponse",
    "FakeStripe",
    "RecordedCall",
    "StripeFakeError",
    "charge_dispute_event",
    "make_event",
    "parse_form",
    "sign_payload",
    "signed_webhook",
]

JSON = dict[str, Any]

DEFAULT_API_KEY = "sk_test_fake"
#: The API version the installed SDK pins (sent as ``Stripe-Version``); events default to it.
DEFAULT_API_VERSION: str = stripe.api_version

_ID_ALPHABET = string.ascii_letters + string.digits
_CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
_CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_MIN_AMOUNT = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50}

# Test payment methods: brand, last4, and the failure (code, decline_code, message) if any.
_Failure = tuple[str, str | None, str]
_TEST_CARDS: dict[str, tuple[str, str, _Failure | None]] = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_amex": ("amex", "8431", None),
    "pm_card_authenticationRequired": ("visa", "3184", None),
    "pm_card_chargeDeclined": (
        "visa",
        "0002",
        ("card_declined", "generic_decline", "Your card was declined."),
    ),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "visa",
        "9995",
        ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "pm_card_chargeDeclinedLostCard": (
        "visa",
        "9987",
        ("card_declined", "lost_card", "Your card was declined."),
    ),
    "pm_card_chargeDeclinedStolenCard": (
        "visa",
        "9979",
        ("card_declined", "stolen_card", "Your card was declined."),
    ),
    "pm_card_chargeDeclinedFraudulent": (
        "visa",
        "0019",
        ("card_declined", "fraudulent", "Your card was declined."),
    ),
    "pm_card_chargeDeclinedExpiredCard": (
        "visa",
        "0069",
        ("expired_card", "expired_card", "Your card has expired."),
    ),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "visa",
        "0127",
        ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    ),
    "pm_card_chargeDeclinedProcessingError": (
        "visa",
        "0119",
        (
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
}
_REQUIRES_ACTION = "pm_card_authenticationRequired"


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as ``pi_3Ps5wgK6QjZA3FWk0U1zZ9Vs``."""
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------------------------------
# Webhook helpers
# --------------------------------------------------------------------------------------------------


def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``: ``t=<ts>,v1=<HMAC-SHA256 of "<ts>.<payload>">``."""
    ts = _now() if timestamp is None else timestamp
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    digest = hmac.new(secret.encode("utf-8"), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def signed_webhook(
    event: Mapping[str, Any], secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stripe would POST to a webhook endpoint for ``event``."""
    payload = json.dumps(event, indent=2).encode("utf-8")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign_payload(payload, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return payload, headers


def make_event(
    event_type: str,
    obj: Mapping[str, Any],
    *,
    api_version: str = DEFAULT_API_VERSION,
    account: str | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> JSON:
    """An Event (snapshot payload) carrying a copy of ``obj``; ``account`` is set for Connect events."""
    data: JSON = {"object": copy.deepcopy(dict(obj))}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
    event: JSON = {
        "id": new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": _now(),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": event_type,
    }
    if account is not None:
        event["account"] = account
    return event


def charge_dispute_event(
    charge_id: str,
    *,
    amount: int,
    currency: str = "usd",
    payment_intent: str | None = None,
    reason: str = "fraudulent",
    status: str = "needs_response",
    api_version: str = DEFAULT_API_VERSION,
) -> JSON:
    """A ``charge.dispute.created`` event with a Dispute object for ``charge_id``."""
    created = _now()
    dispute: JSON = {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id,
        "created": created,
        "currency": currency,
        "evidence_details": {
            "due_by": created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
    }
    return make_event("charge.dispute.created", dispute, api_version=api_version)


# --------------------------------------------------------------------------------------------------
# Request parsing, errors, records
# --------------------------------------------------------------------------------------------------


def parse_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Nest form keys: ``metadata[ride]=7`` -> ``{"metadata": {"ride": "7"}}``, ``expand[0]`` -> a list."""
    root: JSON = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *rest[:-1].split("][")] if rest.endswith("]") else [key]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1] or str(len(node))  # "expand[]" appends
        node[last] = value
    return cast(JSON, _listify(root, ""))


def _listify(value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v, k) for k, v in value.items()}
    if key != "metadata" and items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


class StripeFakeError(Exception):
    """An error answered in Stripe's shape; ``stored`` errors are kept for idempotent replays."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.stored = stored
        self.error: JSON = {"type": type, "message": message}
        if code is not None:
            self.error["code"] = code
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            self.error["param"] = param
        self.error.update(copy.deepcopy(dict(extra or {})))

    def body(self) -> JSON:
        return {"error": self.error}


@dataclass(frozen=True)
class RecordedCall:
    """One request the fake answered (``effective``: executed, see :meth:`FakeStripe.count`)."""

    method: str
    path: str
    params: JSON
    idempotency_key: str | None
    replayed: bool
    status: int
    stripe_account: str | None
    effective: bool
    injected_failure: bool = False


@dataclass(frozen=True)
class FakeResponse:
    """What the HTTP layer writes back (``drop``: close the connection without answering)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass
class _Request:
    method: str
    path: str
    params: JSON
    api_key: str
    account: str | None
    idempotency_key: str | None
    api_version: str
    request_id: str
    target: str = ""


@dataclass(frozen=True)
class _Stored:
    method: str
    path: str
    params: JSON
    status: int
    body: bytes
    request_id: str


@dataclass(frozen=True)
class _Injected:
    status: int
    path_prefix: str | None
    after_commit: bool


_Handler = Callable[[_Request], JSON]

_COMMON = frozenset({"expand"})
_ACCOUNT_CREATE = _COMMON | {
    "type",
    "email",
    "country",
    "capabilities",
    "metadata",
    "business_type",
    "business_profile",
    "controller",
    "default_currency",
    "settings",
    "tos_acceptance",
    "individual",
    "company",
    "external_account",
}
_ACCOUNT_UPDATE = _COMMON | {
    "email",
    "capabilities",
    "metadata",
    "business_type",
    "business_profile",
    "default_currency",
    "settings",
    "tos_acceptance",
    "individual",
    "company",
}
_LINK_CREATE = _COMMON | {"account", "refresh_url", "return_url", "type", "collect", "collection_options"}
_CONFIRM = _COMMON | {
    "payment_method",
    "return_url",
    "off_session",
    "receipt_email",
    "setup_future_usage",
    "payment_method_options",
    "payment_method_types",
    "capture_method",
    "mandate_data",
    "error_on_requires_action",
}
_PI_CREATE = _CONFIRM | {
    "amount",
    "currency",
    "confirm",
    "transfer_data",
    "application_fee_amount",
    "metadata",
    "description",
    "customer",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_group",
    "on_behalf_of",
    "automatic_payment_methods",
    "confirmation_method",
}
_CAPTURE = _COMMON | {
    "amount_to_capture",
    "application_fee_amount",
    "metadata",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "final_capture",
}
_CANCEL = _COMMON | {"cancellation_reason"}
_REFUND_CREATE = _COMMON | {
    "payment_intent",
    "charge",
    "amount",
    "reason",
    "metadata",
    "reverse_transfer",
    "refund_application_fee",
    "instructions_email",
}
_LIST = _COMMON | {"limit", "starting_after", "ending_before", "type", "types", "created"}


# --------------------------------------------------------------------------------------------------
# Parameter helpers
# --------------------------------------------------------------------------------------------------


def _required(params: JSON, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise StripeFakeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return value


def _int(params: JSON, name: str, *, required: bool = False) -> int | None:
    value = _required(params, name) if required else params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.lstrip("-").isdigit():
        raise StripeFakeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    return int(value)


def _positive(params: JSON, name: str, *, required: bool = False) -> int | None:
    value = _int(params, name, required=required)
    if value is not None and value < (1 if name != "application_fee_amount" else 0):
        raise StripeFakeError(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=name,
        )
    return value


def _bool(params: JSON, name: str) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return False
    if value not in ("true", "false"):
        raise StripeFakeError(400, f"Invalid boolean: {value}", code="parameter_invalid_string", param=name)
    return bool(value == "true")


def _choice(params: JSON, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    allowed = tuple(choices)
    if value not in allowed:
        raise StripeFakeError(
            400,
            f"Invalid {name}: must be one of {', '.join(allowed)}",
            code="parameter_invalid_string",
            param=name,
        )
    return cast(str, value)


def _metadata(params: JSON, current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merge ``metadata[...]`` into ``current``; an empty value removes the key, as in Stripe."""
    merged = dict(current or {})
    given = params.get("metadata")
    if given is None or given == "":
        return {} if given == "" else merged
    if not isinstance(given, dict):
        raise StripeFakeError(400, "Invalid object", code="parameter_invalid_string", param="metadata")
    for key, value in given.items():
        if len(key) > 40:
            raise StripeFakeError(
                400, "Metadata keys can have up to 40 characters.", param=f"metadata[{key}]"
            )
        if value == "":
            merged.pop(key, None)
        elif not isinstance(value, str) or len(value) > 500:
            raise StripeFakeError(
                400, "Metadata values can have up to 500 characters.", param=f"metadata[{key}]"
            )
        else:
            merged[key] = value
    if len(merged) > 50:
        raise StripeFakeError(400, "You can have up to 50 metadata keys.", param="metadata")
    return merged


def _money(amount: int, currency: str) -> str:
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency, "")
    return f"{symbol}{amount / 100:.2f}" if symbol else f"{amount / 100:.2f} {currency}"


# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _HTTPHandler)
        self.fake = fake


class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one write per response (no Nagle / delayed-ACK stalls on keep-alive)
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake = cast(_Server, self.server).fake
        response = fake.handle_request(self.command, self.path, headers, body)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet (the fake records every call in ``FakeStripe.calls``)."""


# --------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------


class FakeStripe:
    """A thread-safe in-memory Stripe served over HTTP to the real SDK."""

    def __init__(
        self,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        *,
        api_version: str = DEFAULT_API_VERSION,
        require_transfers_capability: bool = True,
    ) -> None:
        self.api_keys = tuple(api_keys)
        if not self.api_keys:
            raise ValueError("FakeStripe needs at least one API key")
        self.api_version = api_version
        self.require_transfers_capability = require_transfers_capability
        self.lock = threading.RLock()
        #: Guards the pacing controls (held apart from `lock`, which a parked request must not hold).
        self._pacing = threading.Condition()
        self._delay: tuple[float, str | None] = (0.0, None)
        self._hold_prefix: str | None = None
        self._held = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], _Handler, frozenset[str]]] = [
            ("POST", re.compile(r"/v1/accounts"), self._create_account, _ACCOUNT_CREATE),
            ("GET", re.compile(r"/v1/accounts/([^/]+)"), self._get_account, _COMMON),
            ("POST", re.compile(r"/v1/accounts/([^/]+)"), self._update_account, _ACCOUNT_UPDATE),
            ("POST", re.compile(r"/v1/account_links"), self._create_account_link, _LINK_CREATE),
            ("POST", re.compile(r"/v1/payment_intents"), self._create_payment_intent, _PI_CREATE),
            ("GET", re.compile(r"/v1/payment_intents/([^/]+)"), self._get_payment_intent, _COMMON),
            (
                "POST",
                re.compile(r"/v1/payment_intents/([^/]+)/confirm"),
                self._confirm_payment_intent,
                _CONFIRM,
            ),
            (
                "POST",
                re.compile(r"/v1/payment_intents/([^/]+)/capture"),
                self._capture_payment_intent,
                _CAPTURE,
            ),
            ("POST", re.compile(r"/v1/payment_intents/([^/]+)/cancel"), self._cancel_payment_intent, _CANCEL),
            ("POST", re.compile(r"/v1/refunds"), self._create_refund, _REFUND_CREATE),
            ("GET", re.compile(r"/v1/refunds/([^/]+)"), self._get_refund, _COMMON),
            ("GET", re.compile(r"/v1/charges/([^/]+)"), self._get_charge, _COMMON),
            ("GET", re.compile(r"/v1/events"), self._list_events, _LIST),
            ("GET", re.compile(r"/v1/events/([^/]+)"), self._get_event, _COMMON),
        ]
        self.reset()

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The first (default) API key the fake accepts."""
        return self.api_keys[0]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (only once started)."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeStripe:
        """Serve on an ephemeral port in a daemon thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-stripe",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- test controls --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every object, event, call, stored idempotent response, pending failure and pacing."""
        self.slow_down(0)
        self.release()
        with self.lock:
            self.accounts: dict[str, JSON] = {}
            self.account_links: list[JSON] = []
            self.payment_intents: dict[str, JSON] = {}
            self.charges: dict[str, JSON] = {}
            self.refunds: dict[str, JSON] = {}
            self.events: list[JSON] = []
            self.calls: list[RecordedCall] = []
            self.errors: list[str] = []  # tracebacks of bugs in the fake itself (answered as 500)
            self._events_by_id: dict[str, JSON] = {}
            self._idempotency: dict[tuple[str, str, str], _Stored] = {}
            self._injected: list[_Injected] = []
            self._onboarding: dict[str, tuple[str, str | None]] = {}  # link token -> (account, return_url)

    def count(self, method: str, path_prefix: str = "/v1/") -> int:
        """Requests that executed (2xx, or a card decline): not replays, injected failures or rejections."""
        with self.lock:
            return sum(
                1
                for c in self.calls
                if c.effective and c.method == method.upper() and c.path.startswith(path_prefix)
            )

    def slow_down(self, seconds: float, *, path_prefix: str | None = None) -> None:
        """Answer each request (matching ``path_prefix``) ``seconds`` late, before it runs; 0 = off."""
        with self._pacing:
            self._delay = (seconds, path_prefix)

    def hold(self, path_prefix: str) -> None:
        """Park every request whose path starts with ``path_prefix`` before it runs, until :meth:`release`."""
        with self._pacing:
            self._hold_prefix = path_prefix

    def release(self) -> None:
        """Let the parked requests run (in arrival order, each under the fake's lock) and stop parking."""
        with self._pacing:
            self._hold_prefix = None
            self._pacing.notify_all()

    @property
    def held(self) -> int:
        """Requests parked by :meth:`hold` right now."""
        with self._pacing:
            return self._held

    def wait_held(self, n: int, timeout_s: float = 30.0) -> bool:
        """Wait until at least ``n`` requests are parked (False if the deadline passed first)."""
        with self._pacing:
            return self._pacing.wait_for(lambda: self._held >= n, timeout=timeout_s)

    def _pace(self, path: str) -> None:
        with self._pacing:
            delay, prefix = self._delay
            if self._hold_prefix is not None and path.startswith(self._hold_prefix):
                self._held += 1
                self._pacing.notify_all()
                self._pacing.wait_for(lambda: not path.startswith(self._hold_prefix or "\0"))
                self._held -= 1
        if delay > 0 and (prefix is None or path.startswith(prefix)):
            time.sleep(delay)

    def fail_next(self, n: int = 1, status: int = 500, *, path_prefix: str | None = None) -> None:
        """Answer the next ``n`` requests (matching ``path_prefix``) with ``status`` before executing them."""
        with self.lock:
            self._injected.extend(_Injected(status, path_prefix, after_commit=False) for _ in range(n))

    def recover(self) -> None:
        """Forget every failure still waiting to be injected: Stripe is healthy again."""
        with self.lock:
            self._injected.clear()

    def drop_response_next(self, n: int = 1, *, path_prefix: str | None = None) -> None:
        """Execute the next ``n`` requests but close the connection instead of answering (lost response)."""
        with self.lock:
            self._injected.extend(_Injected(0, path_prefix, after_commit=True) for _ in range(n))

    def seed_account(self, *, email: str | None = None, country: str = "US", ready: bool = True) -> JSON:
        """Create an Express account directly (``ready``: onboarding complete)."""
        with self.lock:
            account = self._new_account(
                {
                    "type": "express",
                    "email": email,
                    "country": country,
                    "capabilities": {
                        "card_payments": {"requested": "true"},
                        "transfers": {"requested": "true"},
                    },
                }
            )
            if ready:
                self._update_account_state(account["id"], True, True, True, record=False)
            return copy.deepcopy(account)

    def set_account(
        self,
        account_id: str,
        *,
        charges_enabled: bool | None = None,
        payouts_enabled: bool | None = None,
        details_submitted: bool | None = None,
    ) -> JSON:
        """Change an account's onboarding flags; returns (and records) the ``account.updated`` event."""
        with self.lock:
            if account_id not in self.accounts:
                raise KeyError(account_id)
            return self._update_account_state(account_id, charges_enabled, payouts_enabled, details_submitted)

    def authenticate(self, payment_intent_id: str, *, succeed: bool = True) -> JSON:
        """Finish (or fail) the 3-D Secure step of a ``requires_action`` PaymentIntent; returns the event."""
        with self.lock:
            pi = self.payment_intents[payment_intent_id]
            if pi["status"] != "requires_action":
                raise ValueError(f"{payment_intent_id} is {pi['status']}, not requires_action")
            if succeed:
                return self._authorize(pi, None)
            pi.update(
                status="requires_payment_method",
                next_action=None,
                payment_method=None,
                last_payment_error={
                    "code": "payment_intent_authentication_failure",
                    "type": "invalid_request_error",
                    "message": "The provided PaymentMethod has failed authentication.",
                },
            )
            return self.make_event("payment_intent.payment_failed", pi)

    def dispute(
        self, charge_or_payment_intent_id: str, *, amount: int | None = None, reason: str = "fraudulent"
    ) -> JSON:
        """Open a dispute on a captured charge; returns (and records) the ``charge.dispute.created`` event."""
        with self.lock:
            charge_id = charge_or_payment_intent_id
            if charge_id in self.payment_intents:
                charge_id = self.payment_intents[charge_id]["latest_charge"]
            charge = self.charges[charge_id]
            charge["disputed"] = True
            event = charge_dispute_event(
                charge_id,
                amount=amount if amount is not None else charge["amount_captured"],
                currency=charge["currency"],
                payment_intent=charge["payment_intent"],
                reason=reason,
                api_version=self.api_version,
            )
            self._record_event(event)
            return event

    def make_event(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        *,
        previous_attributes: Mapping[str, Any] | None = None,
        account: str | None = None,
        request: _Request | None = None,
    ) -> JSON:
        """Build an Event for ``obj``, keep it (``events``, ``GET /v1/events/{id}``) and return it."""
        with self.lock:
            event = make_event(
                event_type,
                obj,
                api_version=request.api_version if request else self.api_version,
                account=account,
                previous_attributes=previous_attributes,
                request_id=request.request_id if request else None,
                idempotency_key=request.idempotency_key if request else None,
            )
            self._record_event(event)
            return event

    def events_of_type(self, event_type: str) -> list[JSON]:
        """The recorded events of one type, oldest first."""
        with self.lock:
            return [e for e in self.events if e["type"] == event_type]

    def _record_event(self, event: JSON) -> None:
        self.events.append(event)
        self._events_by_id[event["id"]] = event

    # ---- request handling -----------------------------------------------------------------------

    def handle_request(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> FakeResponse:
        """Answer one HTTP request (``headers`` with lower-case names)."""
        method = method.upper()
        split = urlsplit(raw_path)
        path = split.path
        query = split.query if method != "POST" else body.decode("utf-8")
        params = parse_form(parse_qsl(query, keep_blank_values=True))
        self._pace(path)
        with self.lock:
            onboarding = re.fullmatch(r"/setup/e/([^/]+)/([^/]+)", path)
            if method == "GET" and onboarding:
                return self._visit_onboarding(onboarding.group(2))
            req = _Request(
                method=method,
                path=path,
                params=params,
                api_key=headers.get("authorization", "").removeprefix("Bearer ").strip(),
                account=headers.get("stripe-account") or None,
                idempotency_key=headers.get("idempotency-key") or None,
                api_version=headers.get("stripe-version") or self.api_version,
                request_id=new_id("req", 14),
            )
            return self._answer(req)

    def _answer(self, req: _Request) -> FakeResponse:
        if req.api_key not in self.api_keys:
            masked = req.api_key[:8] + "*" * max(len(req.api_key) - 12, 0) + req.api_key[-4:]
            message = (
                f"Invalid API Key provided: {masked}"
                if req.api_key
                else "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
            return self._finish(req, StripeFakeError(401, message), effective=False)

        injected = next(
            (f for f in self._injected if f.path_prefix is None or req.path.startswith(f.path_prefix)), None
        )
        if injected is not None:
            self._injected.remove(injected)
            if not injected.after_commit:
                error = StripeFakeError(
                    injected.status,
                    "An unknown error occurred (injected by FakeStripe.fail_next).",
                    type="invalid_request_error" if injected.status < 500 else "api_error",
                    code="rate_limit" if injected.status == 429 else None,
                )
                return self._finish(req, error, effective=False, injected=True)

        scope = (req.api_key, req.account or "", req.idempotency_key or "")
        use_idempotency = req.method == "POST" and req.idempotency_key is not None
        if use_idempotency:
            if len(req.idempotency_key or "") > 255:
                return self._finish(
                    req,
                    StripeFakeError(
                        400, "Idempotency keys can be at most 255 characters long.", type="idempotency_error"
                    ),
                    effective=False,
                )
            stored = self._idempotency.get(scope)
            if stored is not None:
                if (stored.method, stored.path, stored.params) != (req.method, req.path, req.params):
                    message = (
                        f"Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{req.idempotency_key}' if you meant "
                        f"to execute a different request."
                    )
                    return self._finish(
                        req, StripeFakeError(400, message, type="idempotency_error"), effective=False
                    )
                self._record(req, stored.status, replayed=True, effective=False)
                headers = self._headers(req)
                headers.update({"Idempotent-Replayed": "true", "Original-Request": stored.request_id})
                return FakeResponse(stored.status, stored.body, headers)

        try:
            result: JSON | StripeFakeError = self._route(req)
        except StripeFakeError as exc:
            result = exc
        except Exception:
            self.errors.append(traceback.format_exc())
            result = StripeFakeError(500, "FakeStripe failed (see FakeStripe.errors).", type="api_error")

        if isinstance(result, StripeFakeError):
            status, payload, store = result.status, result.body(), result.stored
        else:
            status, payload, store = 200, result, True
        body = json.dumps(payload, indent=2).encode("utf-8")
        if use_idempotency and store:
            self._idempotency[scope] = _Stored(req.method, req.path, req.params, status, body, req.request_id)
        self._record(
            req,
            status,
            replayed=False,
            effective=status < 300 or status == 402,
            injected=injected is not None,
        )
        return FakeResponse(status, body, self._headers(req), drop=injected is not None)

    def _finish(
        self, req: _Request, error: StripeFakeError, *, effective: bool, injected: bool = False
    ) -> FakeResponse:
        self._record(req, error.status, replayed=False, effective=effective, injected=injected)
        return FakeResponse(
            error.status, json.dumps(error.body(), indent=2).encode("utf-8"), self._headers(req)
        )

    def _record(
        self, req: _Request, status: int, *, replayed: bool, effective: bool, injected: bool = False
    ) -> None:
        self.calls.append(
            RecordedCall(
                method=req.method,
                path=req.path,
                params=req.params,
                idempotency_key=req.idempotency_key,
                replayed=replayed,
                status=status,
                stripe_account=req.account,
                effective=effective,
                injected_failure=injected,
            )
        )

    def _headers(self, req: _Request) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Request-Id": req.request_id,
            "Stripe-Version": req.api_version,
            "Cache-Control": "no-cache, no-store",
        }
        if req.idempotency_key:
            headers["Idempotency-Key"] = req.idempotency_key
        if req.account:
            headers["Stripe-Account"] = req.account
        return headers

    def _route(self, req: _Request) -> JSON:
        for method, pattern, handler, allowed in self._routes:
            match = pattern.fullmatch(req.path)
            if match is None or method != req.method:
                continue
            for name in req.params:
                if name not in allowed:
                    raise StripeFakeError(
                        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
                    )
            req.target = match.group(1) if match.groups() else ""
            return self._expand(handler(req), req.params.get("expand"))
        raise StripeFakeError(
            404,
            f"Unrecognized request URL ({req.method}: {req.path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _expand(self, obj: JSON, expand: Any) -> JSON:
        """Replace top-level id fields named in ``expand[]`` by the objects (a copy)."""
        out = copy.deepcopy(obj)
        for name in expand if isinstance(expand, list) else []:
            value = out.get(name)
            if isinstance(value, str):
                for store in (self.charges, self.payment_intents, self.refunds, self.accounts):
                    if value in store:
                        out[name] = copy.deepcopy(store[value])
        return out

    @staticmethod
    def _find(store: Mapping[str, JSON], object_id: str, kind: str, param: str, status: int = 404) -> JSON:
        obj = store.get(object_id)
        if obj is None:
            raise StripeFakeError(
                status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
            )
        return obj

    # ---- accounts -------------------------------------------------------------------------------

    def _new_account(self, params: JSON) -> JSON:
        account_type = _choice(params, "type", ("express", "standard", "custom"), default="express")
        country = str(params.get("country") or "US").upper()
        requested = params.get("capabilities") or {}
        if not isinstance(requested, dict):
            raise StripeFakeError(400, "Invalid object", param="capabilities")
        capabilities = {
            name: "inactive"
            for name, options in requested.items()
            if isinstance(options, dict) and options.get("requested") == "true"
        }
        currently_due = ["business_type", "external_account", "tos_acceptance.date", "tos_acceptance.ip"]
        account: JSON = {
            "id": new_id("acct", 16),
            "object": "account",
            "business_profile": {"mcc": None, "name": None, "product_description": None, "url": None},
            "business_type": params.get("business_type"),
            "capabilities": capabilities,
            "charges_enabled": False,
            "controller": {"is_controller": True, "type": "application"},
            "country": country,
            "created": _now(),
            "default_currency": params.get("default_currency") or ("usd" if country == "US" else "eur"),
            "details_submitted": False,
            "email": params.get("email"),
            "external_accounts": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": "/v1/accounts/{id}/external_accounts",
            },
            "metadata": _metadata(params),
            "payouts_enabled": False,
            "requirements": {
                "current_deadline": None,
                "currently_due": list(currently_due),
                "disabled_reason": "requirements.past_due",
                "errors": [],
                "eventually_due": list(currently_due),
                "past_due": list(currently_due),
                "pending_verification": [],
            },
            "settings": {"payouts": {"schedule": {"delay_days": 2, "interval": "daily"}}},
            "tos_acceptance": {"date": None},
            "type": account_type,
        }
        account["external_accounts"]["url"] = f"/v1/accounts/{account['id']}/external_accounts"
        self.accounts[account["id"]] = account
        return account

    def _create_account(self, req: _Request) -> JSON:
        return self._new_account(req.params)

    def _get_account(self, req: _Request) -> JSON:
        return self._find(self.accounts, req.target, "account", "account")

    def _update_account(self, req: _Request) -> JSON:
        account = self._find(self.accounts, req.target, "account", "account")
        previous: JSON = {}
        if "metadata" in req.params:
            previous["metadata"] = dict(account["metadata"])
            account["metadata"] = _metadata(req.params, account["metadata"])
        if req.params.get("email"):
            previous["email"] = account["email"]
            account["email"] = req.params["email"]
        if previous:
            self.make_event(
                "account.updated", account, previous_attributes=previous, account=account["id"], request=req
            )
        return account

    def _update_account_state(
        self,
        account_id: str,
        charges_enabled: bool | None,
        payouts_enabled: bool | None,
        details_submitted: bool | None,
        *,
        record: bool = True,
    ) -> JSON:
        account = self.accounts[account_id]
        previous: JSON = {}
        for name, value in (
            ("charges_enabled", charges_enabled),
            ("payouts_enabled", payouts_enabled),
            ("details_submitted", details_submitted),
        ):
            if value is not None and account[name] != value:
                previous[name] = account[name]
                account[name] = value
        if "charges_enabled" in previous:
            previous["capabilities"] = dict(account["capabilities"])
            status = "active" if account["charges_enabled"] else "inactive"
            account["capabilities"] = {name: status for name in account["capabilities"]} or {
                "transfers": status
            }
        if account["details_submitted"]:
            previous.setdefault("requirements", copy.deepcopy(account["requirements"]))
            account["requirements"].update(
                currently_due=[], eventually_due=[], past_due=[], disabled_reason=None
            )
            account["tos_acceptance"] = {"date": account["tos_acceptance"]["date"] or _now()}
        event = make_event(
            "account.updated",
            account,
            api_version=self.api_version,
            account=account_id,
            previous_attributes=previous,
        )
        if record:
            self._record_event(event)
        return event

    def _create_account_link(self, req: _Request) -> JSON:
        account_id = _required(req.params, "account")
        self._find(self.accounts, account_id, "account", "account", status=400)
        link_type = _choice(req.params, "type", ("account_onboarding", "account_update"))
        if link_type is None:
            _required(req.params, "type")
        token = secrets.token_urlsafe(12)
        self._onboarding[token] = (account_id, req.params.get("return_url"))
        created = _now()
        link = {
            "object": "account_link",
            "created": created,
            "expires_at": created + 300,
            "url": f"{self.base_url}/setup/e/{account_id}/{token}",
        }
        self.account_links.append(
            {
                **link,
                "account": account_id,
                "type": link_type,
                "refresh_url": req.params.get("refresh_url"),
                "return_url": req.params.get("return_url"),
            }
        )
        return link

    def _visit_onboarding(self, token: str) -> FakeResponse:
        """The hosted onboarding page: completes onboarding and redirects to the link's ``return_url``."""
        entry = self._onboarding.get(token)
        if entry is None:
            return FakeResponse(404, b"This link has expired.", {"Content-Type": "text/plain"})
        account_id, return_url = entry
        self._update_account_state(account_id, True, True, True)
        if return_url:
            return FakeResponse(302, b"", {"Location": return_url})
        return FakeResponse(200, b"Onboarding complete.", {"Content-Type": "text/plain"})

    # ---- payment intents ------------------------------------------------------------------------

    def _create_payment_intent(self, req: _Request) -> JSON:
        p = req.params
        amount = cast(int, _positive(p, "amount", required=True))
        currency = str(_required(p, "currency")).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeFakeError(
                400, f"Invalid currency: {currency}.", code="parameter_invalid_string", param="currency"
            )
        minimum = _MIN_AMOUNT.get(currency, 50)
        if amount < minimum:
            raise StripeFakeError(
                400,
                f"Amount must be at least {_money(minimum, currency)} {currency}",
                code="amount_too_small",
                param="amount",
            )
        capture_method = _choice(
            p, "capture_method", ("automatic", "automatic_async", "manual"), "automatic_async"
        )
        transfer_data = self._transfer_data(p, amount)
        fee = _positive(p, "application_fee_amount")
        if fee is not None and transfer_data is None and req.account is None:
            raise StripeFakeError(
                400,
                "Can only apply an application_fee_amount when the PaymentIntent is attempting a direct "
                "payment (using an OAuth key or Stripe-Account header) or destination payment (using "
                "`transfer_data[destination]`).",
                param="application_fee_amount",
            )
        if fee is not None and fee > amount:
            raise StripeFakeError(
                400,
                "application_fee_amount must be less than or equal to amount.",
                param="application_fee_amount",
            )
        payment_method = p.get("payment_method") or None
        if payment_method is not None:
            self._payment_method(payment_method)
        confirm = _bool(p, "confirm")
        if confirm and payment_method is None:
            raise StripeFakeError(
                400,
                "You must provide a payment_method when confirm=true.",
                code="parameter_missing",
                param="payment_method",
            )
        pi_id = new_id("pi")
        pi: JSON = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": fee,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": capture_method,
            "client_secret": f"{pi_id}_secret_{new_id('x', 25)[2:]}",
            "confirmation_method": "automatic",
            "created": _now(),
            "currency": currency,
            "customer": p.get("customer"),
            "description": p.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": _metadata(p),
            "next_action": None,
            "on_behalf_of": p.get("on_behalf_of"),
            "payment_method": payment_method,
            "payment_method_types": list(p.get("payment_method_types") or ["card"]),
            "receipt_email": p.get("receipt_email"),
            "statement_descriptor": p.get("statement_descriptor"),
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
            "transfer_data": transfer_data,
            "transfer_group": p.get("transfer_group"),
        }
        self.payment_intents[pi_id] = pi
        if confirm:
            self._confirm(pi, req)
        return pi

    def _transfer_data(self, p: JSON, amount: int) -> JSON | None:
        given = p.get("transfer_data")
        if given is None:
            return None
        if not isinstance(given, dict):
            raise StripeFakeError(400, "Invalid object", param="transfer_data")
        destination = _required(given, "destination") if "destination" in given else None
        if destination is None:
            raise StripeFakeError(
                400,
                "Missing required param: transfer_data[destination].",
                code="parameter_missing",
                param="transfer_data[destination]",
            )
        account = self.accounts.get(destination)
        if account is None:
            raise StripeFakeError(
                400,
                f"No such destination: '{destination}'",
                code="resource_missing",
                param="transfer_data[destination]",
            )
        if self.require_transfers_capability and account["capabilities"].get("transfers") != "active":
            raise StripeFakeError(
                400,
                "Your destination account needs to have at least one of the following capabilities "
                "enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="transfer_data[destination]",
            )
        data: JSON = {"destination": destination}
        if given.get("amount") not in (None, ""):
            transfer_amount = cast(int, _positive(given, "amount"))
            if transfer_amount > amount:
                raise StripeFakeError(
                    400,
                    "transfer_data[amount] must be less than or equal to amount.",
                    param="transfer_data[amount]",
                )
            data["amount"] = transfer_amount
        return data

    def _payment_method(self, pm_id: str) -> JSON:
        if not pm_id.startswith("pm_"):
            raise StripeFakeError(
                400, f"No such PaymentMethod: '{pm_id}'", code="resource_missing", param="payment_method"
            )
        brand, last4, _ = _TEST_CARDS.get(pm_id, ("visa", "4242", None))
        return {
            "id": pm_id,
            "object": "payment_method",
            "type": "card",
            "livemode": False,
            "created": _now(),
            "billing_details": {"address": None, "email": None, "name": None, "phone": None},
            "card": {
                "brand": brand,
                "last4": last4,
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                "country": "US",
                "funding": "credit",
            },
            "customer": None,
            "metadata": {},
        }

    def _get_payment_intent(self, req: _Request) -> JSON:
        return self._find(self.payment_intents, req.target, "payment_intent", "intent")

    def _confirm_payment_intent(self, req: _Request) -> JSON:
        pi = self._find(self.payment_intents, req.target, "payment_intent", "intent")
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise self._unexpected_state(pi, "confirm", ("requires_payment_method", "requires_confirmation"))
        capture_method = _choice(req.params, "capture_method", ("automatic", "automatic_async", "manual"))
        payment_method = req.params.get("payment_method") or pi["payment_method"]
        if payment_method:
            self._payment_method(payment_method)
        pi.update(payment_method=payment_method, capture_method=capture_method or pi["capture_method"])
        self._confirm(pi, req)
        return pi

    def _confirm(self, pi: JSON, req: _Request) -> None:
        pm_id = pi["payment_method"]
        if not pm_id:
            raise StripeFakeError(
                400,
                "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm "
                "the PaymentIntent, specify a payment method.",
                code="payment_intent_unexpected_state",
                param="payment_method",
                extra={"payment_intent": copy.deepcopy(pi)},
            )
        failure = _TEST_CARDS.get(pm_id, ("", "", None))[2]
        if failure is not None:
            self._decline(pi, pm_id, failure, req)
        if pm_id == _REQUIRES_ACTION:
            pi.update(status="requires_action", next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}})
            return
        self._authorize(pi, req)

    def _authorize(self, pi: JSON, req: _Request | None) -> JSON:
        """A successful authorization: a charge, then ``requires_capture`` or ``succeeded``."""
        charge = self._new_charge(pi, status="succeeded")
        pi.update(latest_charge=charge["id"], next_action=None, last_payment_error=None)
        if pi["capture_method"] == "manual":
            pi.update(status="requires_capture", amount_capturable=pi["amount"])
            return self.make_event("payment_intent.amount_capturable_updated", pi, request=req)
        self._settle(pi, charge, pi["amount"])
        return self.make_event("payment_intent.succeeded", pi, request=req)

    def _decline(self, pi: JSON, pm_id: str, failure: _Failure, req: _Request) -> None:
        code, decline_code, message = failure
        charge = self._new_charge(pi, status="failed")
        charge.update(
            paid=False,
            failure_code=code,
            failure_message=message,
            outcome={
                "network_status": "declined_by_network",
                "reason": decline_code,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            },
        )
        payment_method = self._payment_method(pm_id)
        error: JSON = {
            "type": "card_error",
            "code": code,
            "message": message,
            "charge": charge["id"],
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "payment_method": payment_method,
        }
        if decline_code:
            error["decline_code"] = decline_code
        pi.update(
            status="requires_payment_method",
            payment_method=None,
            latest_charge=charge["id"],
            last_payment_error=error,
        )
        self.make_event("payment_intent.payment_failed", pi, request=req)
        extra = {k: v for k, v in error.items() if k not in ("type", "code", "message", "doc_url")}
        raise StripeFakeError(
            402,
            message,
            type="card_error",
            code=code,
            stored=True,
            extra={**extra, "payment_intent": copy.deepcopy(pi)},
        )

    def _new_charge(self, pi: JSON, *, status: str) -> JSON:
        charge: JSON = {
            "id": new_id("ch"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "application_fee": None,
            "application_fee_amount": pi["application_fee_amount"],
            "balance_transaction": None,
            "captured": False,
            "created": _now(),
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "destination": (pi["transfer_data"] or {}).get("destination"),
            "disputed": False,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": dict(pi["metadata"]),
            "outcome": {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            "paid": status == "succeeded",
            "payment_intent": pi["id"],
            "payment_method": pi["payment_method"],
            "refunded": False,
            "status": status,
            "transfer": None,
            "transfer_data": copy.deepcopy(pi["transfer_data"]),
            "transfer_group": pi["transfer_group"],
        }
        self.charges[charge["id"]] = charge
        return charge

    def _settle(self, pi: JSON, charge: JSON, amount: int) -> None:
        """Capture ``amount`` of ``charge``: money moves, transfer and application fee are created."""
        charge.update(captured=True, amount_captured=amount, balance_transaction=new_id("txn"))
        if amount < charge["amount"]:  # Stripe releases the rest, shown as refunded on the charge
            charge["amount_refunded"] = charge["amount"] - amount
        if pi["transfer_data"]:
            charge["transfer"] = new_id("tr")
        if pi["application_fee_amount"]:
            charge.update(application_fee=new_id("fee"), application_fee_amount=pi["application_fee_amount"])
        pi.update(status="succeeded", amount_capturable=0, amount_received=amount)

    def _capture_payment_intent(self, req: _Request) -> JSON:
        pi = self._find(self.payment_intents, req.target, "payment_intent", "intent")
        if pi["status"] != "requires_capture":
            if pi["status"] == "succeeded":
                raise StripeFakeError(
                    400,
                    "This PaymentIntent could not be captured because it has already been captured.",
                    code="payment_intent_unexpected_state",
                    stored=True,
                    extra={"payment_intent": copy.deepcopy(pi)},
                )
            raise self._unexpected_state(pi, "captured", ("requires_capture",))
        amount = _positive(req.params, "amount_to_capture")
        amount = pi["amount_capturable"] if amount is None else amount
        if amount > pi["amount_capturable"]:
            raise StripeFakeError(
                400,
                f"The amount to capture ({amount}) must be less than or equal to the amount capturable "
                f"({pi['amount_capturable']}).",
                code="amount_too_large",
                param="amount_to_capture",
            )
        fee = _positive(req.params, "application_fee_amount")
        fee = pi["application_fee_amount"] if fee is None else fee
        if (fee or 0) > amount:
            raise StripeFakeError(
                400,
                "The application fee cannot be greater than the amount to capture.",
                param="application_fee_amount",
            )
        metadata = _metadata(req.params, pi["metadata"])
        pi.update(application_fee_amount=fee, metadata=metadata)
        self._settle(pi, self.charges[pi["latest_charge"]], amount)
        self.make_event("payment_intent.succeeded", pi, request=req)
        return pi

    def _cancel_payment_intent(self, req: _Request) -> JSON:
        pi = self._find(self.payment_intents, req.target, "payment_intent", "intent")
        if pi["status"] not in _CANCELABLE:
            raise self._unexpected_state(pi, "canceled", _CANCELABLE)
        reason = _choice(req.params, "cancellation_reason", _CANCELLATION_REASONS)
        charge = self.charges.get(pi["latest_charge"] or "")
        if charge is not None and charge["status"] == "succeeded" and not charge["captured"]:
            charge.update(refunded=True, amount_refunded=charge["amount"])  # the authorization is released
        pi.update(
            status="canceled",
            canceled_at=_now(),
            cancellation_reason=reason,
            amount_capturable=0,
            next_action=None,
        )
        self.make_event("payment_intent.canceled", pi, request=req)
        return pi

    @staticmethod
    def _unexpected_state(pi: JSON, verb: str, allowed: Iterable[str]) -> StripeFakeError:
        action = {"confirm": "You cannot confirm this PaymentIntent"}.get(
            verb, f"This PaymentIntent could not be {verb}"
        )
        return StripeFakeError(
            400,
            f"{action} because it has a status of {pi['status']}. Only a PaymentIntent with one of the "
            f"following statuses may be {'confirmed' if verb == 'confirm' else verb}: {', '.join(allowed)}.",
            code="payment_intent_unexpected_state",
            stored=True,
            extra={"payment_intent": copy.deepcopy(pi)},
        )

    # ---- refunds, charges, events ---------------------------------------------------------------

    def _create_refund(self, req: _Request) -> JSON:
        p = req.params
        pi_id, charge_id = p.get("payment_intent") or None, p.get("charge") or None
        if pi_id and charge_id:
            raise StripeFakeError(400, "You cannot specify both charge and payment_intent.", param="charge")
        if pi_id:
            pi = self._find(self.payment_intents, pi_id, "payment_intent", "payment_intent", status=400)
            charge = self.charges.get(pi["latest_charge"] or "")
            if pi["status"] != "succeeded" or charge is None:
                hint = (
                    " Cancel it instead to release the authorization."
                    if pi["status"] == "requires_capture"
                    else ""
                )
                raise StripeFakeError(
                    400,
                    f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.{hint}",
                    code="payment_intent_unexpected_state",
                    param="payment_intent",
                )
        elif charge_id:
            charge = self._find(self.charges, charge_id, "charge", "charge", status=400)
        else:
            raise StripeFakeError(
                400,
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
                param="charge",
            )
        if charge["disputed"]:
            raise StripeFakeError(
                400,
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
                stored=True,
            )
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            raise StripeFakeError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                stored=True,
            )
        amount = _positive(p, "amount")
        amount = remaining if amount is None else amount
        if amount > remaining:
            currency = charge["currency"]
            raise StripeFakeError(
                400,
                f"Refund amount ({_money(amount, currency)}) is greater than unrefunded amount on charge "
                f"({_money(remaining, currency)})",
                code="amount_too_large",
                param="amount",
            )
        reverse_transfer = _bool(p, "reverse_transfer")
        refund_fee = _bool(p, "refund_application_fee")
        if reverse_transfer and not charge["transfer"]:
            raise StripeFakeError(
                400,
                "reverse_transfer can only be used on charges with a destination "
                "(transfer_data[destination]).",
                param="reverse_transfer",
            )
        if refund_fee and not charge["application_fee"]:
            raise StripeFakeError(
                400,
                "refund_application_fee can only be used on charges with an application fee.",
                param="refund_application_fee",
            )
        refund: JSON = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": new_id("txn"),
            "charge": charge["id"],
            "created": _now(),
            "currency": charge["currency"],
            "destination_details": {"card": {"type": "refund"}, "type": "card"},
            "metadata": _metadata(p),
            "payment_intent": charge["payment_intent"],
            "reason": _choice(p, "reason", _REFUND_REASONS),
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": new_id("trr") if reverse_transfer else None,
        }
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self.make_event(
            "charge.refunded",
            charge,
            previous_attributes={"amount_refunded": charge["amount_refunded"] - amount},
            request=req,
        )
        return refund

    def _get_refund(self, req: _Request) -> JSON:
        return self._find(self.refunds, req.target, "refund", "id")

    def _get_charge(self, req: _Request) -> JSON:
        return self._find(self.charges, req.target, "charge", "id")

    def _get_event(self, req: _Request) -> JSON:
        return self._find(self._events_by_id, req.target, "event", "id")

    def _list_events(self, req: _Request) -> JSON:
        limit = _int(req.params, "limit") or 10
        wanted = req.params.get("type")
        events = [e for e in reversed(self.events) if wanted in (None, e["type"])]
        after = req.params.get("starting_after")
        if after:
            ids = [e["id"] for e in events]
            events = events[ids.index(after) + 1 :] if after in ids else []
        return {
            "object": "list",
            "url": "/v1/events",
            "has_more": len(events) > limit,
            "data": events[:limit],
        }
