"""One error root for the application. Each error has an HTTP status and a stable code.

The API maps every `AppError` to `{"error": {"code", "message", "details"}}`; workers and the CLI
use the same classes so a business failure reads the same everywhere. Codes (and their statuses) are
exactly the contract's list (`CONTRACT_CODES`); a finer cause is told in `details.reason`.

The root (`AppError`) and the state machines' `InvalidTransition` (and `InvalidPaymentTransition`)
live in `models/errors.py`, so the models raise them without importing `app/`; they are
re-exported here with the rest.
"""

from __future__ import annotations

from typing import Any

from models.errors import AppError as AppError
from models.errors import InvalidPaymentTransition as InvalidPaymentTransition
from models.errors import InvalidTransition as InvalidTransition

#: The public contract's error codes and the HTTP statuses each is answered with (API.md, "Errors").
CONTRACT_CODES: dict[str, frozenset[int]] = {
    "VALIDATION_ERROR": frozenset({400}),
    "INVALID_CREDENTIALS": frozenset({401}),
    "INVALID_TOKEN": frozenset({401}),
    "TOKEN_EXPIRED": frozenset({401}),
    "TOKEN_REVOKED": frozenset({401}),
    "ACCOUNT_DEACTIVATED": frozenset({403}),
    "FORBIDDEN": frozenset({403}),
    "NOT_FOUND": frozenset({404}),
    "CONFLICT": frozenset({409}),
    "INVALID_TRANSITION": frozenset({409}),
    "RATE_LIMITED": frozenset({429}),
    "INVALID_SIGNATURE": frozenset({400, 403}),
    "SERVICE_UNAVAILABLE": frozenset({503}),
}


# --- input -----------------------------------------------------------------------------------
class ValidationFailed(AppError):
    """The request body, query or path is malformed; `details` names the offending fields."""

    status_code = 400
    code = "VALIDATION_ERROR"
    default_message = "The request is not valid."


# --- authentication --------------------------------------------------------------------------
class AuthError(AppError):
    """Base of authentication failures (401; a bare one reads as the contract's `INVALID_TOKEN`)."""

    status_code = 401
    code = "INVALID_TOKEN"
    default_message = "The token is missing or not valid."


class InvalidCredentials(AuthError):
    """Email and password do not match an account."""

    code = "INVALID_CREDENTIALS"
    default_message = "Email or password is incorrect."


class InvalidToken(AuthError):
    """A token is missing, malformed or signed with another key."""

    code = "INVALID_TOKEN"
    default_message = "The token is missing or not valid."


class TokenExpired(AuthError):
    """A token is past its expiry."""

    code = "TOKEN_EXPIRED"
    default_message = "The token has expired."


class TokenRevoked(AuthError):
    """A token was revoked (logout, logout-all, refresh reuse)."""

    code = "TOKEN_REVOKED"
    default_message = "The token has been revoked."


class RefreshTokenReused(TokenRevoked):
    """A spent refresh token was presented again: its whole family is revoked (kept on commit)."""

    keeps_changes = True


# --- authorisation ---------------------------------------------------------------------------
class AccountDeactivated(AppError):
    """The account is suspended or deactivated."""

    status_code = 403
    code = "ACCOUNT_DEACTIVATED"
    default_message = "This account is deactivated."


class Forbidden(AppError):
    """The caller is authenticated but may not do this."""

    status_code = 403
    code = "FORBIDDEN"
    default_message = "You may not do this."


# --- state -----------------------------------------------------------------------------------
class NotFound(AppError):
    """The resource does not exist or the caller may not see it."""

    status_code = 404
    code = "NOT_FOUND"
    default_message = "Not found."


class Conflict(AppError):
    """The request conflicts with the current state (duplicate, closed resource)."""

    status_code = 409
    code = "CONFLICT"
    default_message = "The request conflicts with the current state."


# --- limits and faults -----------------------------------------------------------------------
class RateLimited(AppError):
    """Too many requests; `retry_after_s` says when to try again."""

    status_code = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests; try again later."

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = max(1, retry_after_s)
        super().__init__(details={"retryAfter": self.retry_after_s})


class CodeMismatch(ValidationFailed):
    """A wrong one-time code; the spent attempt is kept (committed) with the answer."""

    keeps_changes = True


class CodeRefused(Conflict):
    """No live one-time code to check (none sent, expired, or out of attempts); `details.reason`
    says which. Kept on commit (a code spent by its last attempt stays spent)."""

    keeps_changes = True


class InvalidSignature(AppError):
    """A provider webhook's signature does not verify."""

    status_code = 400
    code = "INVALID_SIGNATURE"
    default_message = "The signature does not verify."


class TwilioSignatureInvalid(InvalidSignature):
    """A Twilio callback's `X-Twilio-Signature` is missing or wrong (Twilio's convention: 403)."""

    status_code = 403


class ServiceUnavailable(AppError):
    """A dependency (PostgreSQL, Redis, a provider) is unreachable; nothing was half-done."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "A dependency is unavailable; try again shortly."


class ProviderError(AppError):
    """A provider (Stripe, Twilio) failed or refused: `SERVICE_UNAVAILABLE`, `details.reason` says so."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "A payment or messaging provider failed."

    def __init__(self, message: str | None = None, *, transient: bool, details: Any = None) -> None:
        self.transient = transient
        #: Set by a service that already logged this failure (the job wrapper then doesn't).
        self.logged = False
        super().__init__(message, details={"reason": "PROVIDER_ERROR", "transient": transient,
                                           **(details or {})})


class CircuitOpen(ProviderError):
    """Calls to a provider are paused after repeated failures; nothing was sent. Try after
    `retry_after_s` seconds (a job waits that long without spending a retry)."""

    def __init__(self, provider: str, retry_after_s: float) -> None:
        self.provider = provider
        self.retry_after_s = max(0.05, retry_after_s)
        super().__init__(f"{provider} is failing; calls are paused for {self.retry_after_s:.1f} s.",
                         transient=True, details={"reason": "CIRCUIT_OPEN", "provider": provider,
                                                  "code": "CIRCUIT_OPEN"})


class PaymentsDisabled(Conflict):
    """A card payment (or payouts onboarding) was asked for on a farm with no Stripe key configured."""

    default_message = (
        "Card payments are disabled on this farm: set STRIPE_SECRET_KEY (and STRIPE_WEBHOOK_SECRET for "
        "the webhooks) and restart it to enable them. Cash rides work without them."
    )

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, details={"reason": "PAYMENTS_DISABLED"})
