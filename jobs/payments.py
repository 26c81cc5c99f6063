"""Payment actors (queue `payments`): thin wrappers over `app.services.payments`.

Each Stripe call inside carries an idempotency key fixed by the ride and the operation, and every
actor re-reads the payment row (locked) and Stripe's state first: delivered twice, it acts once.
A Stripe failure that may pass (network, 5xx, rate limit) raises and is retried with backoff; a
refusal is recorded on the payment.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.errors import InvalidPaymentTransition, ProviderError
from app.keys import (
    PAYMENTS_AUTHORIZE,
    PAYMENTS_CANCEL,
    PAYMENTS_CAPTURE,
    PAYMENTS_HANDLE_EVENT,
    PAYMENTS_REFUND,
)
from app.services import payments
from jobs.base import JobContext, job
from workers.resources import get_resources


def payment_env(ctx: JobContext) -> payments.JobEnv:
    return payments.JobEnv(settings=ctx.settings, gateway=get_resources().stripe,
                           after_commit=ctx.uow.after_commit, emit=ctx.publisher.emit)


def _retry_when(retries: int, exc: BaseException) -> bool:
    """Retry what may pass; a provider's refusal is final (recorded as a failed job for replay), and
    so is a payment status change the state machine refuses (a bug, or events in an unforeseen order)."""
    if isinstance(exc, InvalidPaymentTransition):
        return False
    if isinstance(exc, ProviderError):
        return exc.transient and retries < 12
    return retries < 12


OPTIONS: dict[str, Any] = {"min_backoff_ms": 1_000, "max_backoff_ms": 10 * 60 * 1000,
                            "time_limit_ms": 120_000, "retry_when": _retry_when}


@job(PAYMENTS_AUTHORIZE, **OPTIONS)
def authorize(ctx: JobContext, ride_id: str) -> None:
    payments.authorize(ctx.uow.session, payment_env(ctx), uuid.UUID(ride_id))


@job(PAYMENTS_CAPTURE, **OPTIONS)
def capture(ctx: JobContext, ride_id: str) -> None:
    payments.capture(ctx.uow.session, payment_env(ctx), uuid.UUID(ride_id))


@job(PAYMENTS_CANCEL, **OPTIONS)
def cancel(ctx: JobContext, ride_id: str) -> None:
    payments.cancel(ctx.uow.session, payment_env(ctx), uuid.UUID(ride_id))


@job(PAYMENTS_REFUND, **OPTIONS)
def refund(ctx: JobContext, ride_id: str, request_id: str, amount: int | None = None) -> None:
    payments.refund(ctx.uow.session, payment_env(ctx), uuid.UUID(ride_id), request_id, amount)


@job(PAYMENTS_HANDLE_EVENT, **OPTIONS)
def handle_event(ctx: JobContext, event_id: str) -> None:
    payments.handle_event(ctx.uow.session, payment_env(ctx), event_id)
