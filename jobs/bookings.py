"""Booking actors: thin wrappers over `app.services.bookings`.

- `bookings.settle(booking)` (queue `payments`): the payment follows the booking (hold, confirm
  when authorized, capture, fee, release), keyed at Stripe; written by every booking change and by
  the Stripe webhook of a booking's PaymentIntent.
- `bookings.expire_hold(booking)` (queue `dispatch`): a due row at `holdExpiresAt`; a hold still
  unconfirmed then is EXPIRED and its time freed.
- `bookings.remind(booking, offset)` (queue `notifications`): a due row `offset` seconds before the
  start; only a booking still CONFIRMED is reminded, once per offset.

Each compares-and-sets on the booking (and Stripe's idempotency keys): delivered twice, it acts once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.keys import BOOKINGS_EXPIRE_HOLD, BOOKINGS_REMIND, BOOKINGS_SETTLE
from app.services.bookings import lifecycle, money, reminders
from app.services.bookings.effects import Effects
from jobs.base import JobContext, job
from jobs.payments import OPTIONS, payment_env


@job(BOOKINGS_SETTLE, **OPTIONS)
def settle(ctx: JobContext, booking_id: str) -> None:
    effects = Effects()
    money.settle(ctx.uow.session, payment_env(ctx), uuid.UUID(booking_id), now=datetime.now(UTC),
                 effects=effects)
    effects.emit_after_commit(ctx.uow.after_commit, ctx.publisher.emit)


@job(BOOKINGS_EXPIRE_HOLD, max_retries=8, min_backoff_ms=200, time_limit_ms=30_000)
def expire_hold(ctx: JobContext, booking_id: str) -> None:
    effects = Effects()
    lifecycle.expire(ctx.uow.session, ctx.settings, uuid.UUID(booking_id), now=datetime.now(UTC),
                     effects=effects)
    effects.emit_after_commit(ctx.uow.after_commit, ctx.publisher.emit)


@job(BOOKINGS_REMIND, max_retries=8, min_backoff_ms=1_000, time_limit_ms=30_000)
def remind(ctx: JobContext, booking_id: str, offset_s: int) -> None:
    reminders.remind(ctx.uow.session, ctx.settings, uuid.UUID(booking_id), int(offset_s),
                     now=datetime.now(UTC))
