"""`notifications.send` and `notifications.reconcile`: thin wrappers over the delivery service.

`send` retries transient provider errors with exponential backoff (1 s doubling, at most 5 min
apart); the row's own attempt count (`NOTIFY_MAX_ATTEMPTS`) decides when to give up, so Dramatiq's
`max_retries` is only a ceiling above it. Its priority is below the default: a worker process
serving several queues takes a waiting dispatch message before a waiting notification (lower
runs first), so a notification backlog never holds dispatch up inside a worker either.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.adapters.twilio_sender import senders_for
from app.keys import NOTIFICATIONS_RECONCILE, NOTIFICATIONS_SEND
from app.services import notification_delivery
from jobs.base import JobContext, job


@job(NOTIFICATIONS_SEND, max_retries=20, min_backoff_ms=1_000,
     max_backoff_ms=5 * 60 * 1000, time_limit_ms=60_000, priority=10, claim_first=False)
def send(ctx: JobContext, notification_id: str) -> None:
    notification_delivery.deliver(
        ctx.uow.session, senders_for(ctx.settings.twilio), ctx.settings.twilio, ctx.settings.notifications,
        uuid.UUID(notification_id),
    )


@job(NOTIFICATIONS_RECONCILE, max_retries=3)
def reconcile(ctx: JobContext) -> None:
    notification_delivery.requeue_stuck(ctx.uow.session, ctx.settings.notifications, now=datetime.now(UTC))
