"""Delivering notifications: `notifications.send`, Twilio's status callbacks, the stuck-row sweep.

A row is sent at most once by compare-and-set on its status:

    queued ──claim──▶ sending ──provider accepted──▶ sent ──callback──▶ delivered | undelivered | failed
       ▲                 │ transient (429, 5xx, timeout): back to queued, the job retries with backoff
       └─────────────────┘ permanent (invalid number…) or `max_attempts` reached: failed

The claim (`queued → sending`, attempts + 1, a lease) is committed before the provider is called,
so a redelivered message finds the row `sending`, `sent` or final and does nothing. A `sending`
row whose lease lapsed belongs to a crashed sender and may be claimed again: delivery is
at-least-once only across such a crash (the provider accepted, the worker died before recording).

Status callbacks move a row forward only (`delivered` never goes back to `sent`); they find it by
`MessageSid`, or by our id on the callback URL when they overtake the worker's own record of the
send — which also stops a retry after a timeout whose message Twilio had in fact accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.adapters.twilio_sender import Senders, callback_url
from app.errors import ProviderError
from app.keys import NOTIFICATIONS_SEND
from app.logging import get_logger
from app.outbox import INSERT_JOB
from app.services.notifications import SECRET_TEMPLATES
from app.settings import NotificationSettings, TwilioSettings

log = get_logger("notifications")

#: A one-time code's body is redacted once it was handed over (or failed for good).
_SECRET: Final = ",".join(sorted(SECRET_TEMPLATES))

_CLAIM = text("""
UPDATE notifications
SET status = 'sending', attempts = attempts + 1, lease_until = :lease_until, updated_at = :now
WHERE id = ANY(CAST(:ids AS uuid[])) AND (status = 'queued' OR (status = 'sending' AND lease_until < :now))
RETURNING id, channel, recipient, body, template, attempts
""")

# A status callback may have overtaken us (and moved the row on): keep what it recorded.
_SENT = text("""
UPDATE notifications
SET status = CASE WHEN status = 'sending' THEN 'sent' ELSE status END,
    body = CASE WHEN template = ANY(string_to_array(:secret_templates, ',')) THEN '[redacted]' ELSE body END,
    error_code = CASE WHEN status = 'sending' THEN NULL ELSE error_code END,
    error_message = CASE WHEN status = 'sending' THEN NULL ELSE error_message END,
    provider_id = sent.provider_id, sent_at = COALESCE(sent_at, :now), lease_until = NULL, updated_at = :now
FROM unnest(CAST(:ids AS uuid[]), CAST(:provider_ids AS text[])) AS sent(id, provider_id)
WHERE notifications.id = sent.id
""")

_GIVE_UP = text("""
UPDATE notifications
SET status = :status, error_code = :code, error_message = :message, lease_until = NULL, updated_at = :now,
    body = CASE WHEN :final AND template = ANY(string_to_array(:secret_templates, ','))
                THEN '[redacted]' ELSE body END
WHERE id = :id AND status = 'sending'
""")


@dataclass(frozen=True)
class Delivery:
    outcome: str  # "sent", "failed" or "skipped" (not ours to send: sent, final, or being sent)
    provider_id: str | None = None


def deliver(session: Session, senders: Senders, twilio: TwilioSettings, settings: NotificationSettings,
            notification_id: uuid.UUID) -> Delivery:
    """Send one notification (see the module docstring) with a session that has not begun yet.

    Raises `CircuitOpen` before the claim while Twilio is paused (no attempt is spent), and
    `ProviderError` (transient) after putting the row back to `queued`, so the job's retry policy
    tries again with backoff; returns `failed` for a permanent error or on the last attempt.
    """
    if senders.circuit is not None:
        senders.circuit.guard()  # Twilio paused: `CircuitOpen` before the claim, so no attempt is spent
    result = deliver_many(session, senders, twilio, settings, [notification_id])[notification_id]
    if isinstance(result, ProviderError):
        raise result
    return result


Sent = tuple[Any, "str | ProviderError"]


def deliver_many(session: Session, senders: Senders, twilio: TwilioSettings, settings: NotificationSettings,
                 notification_ids: Sequence[uuid.UUID], *,
                 run_all: Callable[[Callable[[Any], Sent], list[Any]], Iterable[Sent]] = map,
                 ) -> dict[uuid.UUID, Delivery | ProviderError]:
    """Send many notifications: one claim statement, the sends through `run_all` (a thread pool's
    `map` sends them concurrently), one statement recording every accepted one.

    Each step commits on its own (the session's connection runs in autocommit): the claims are
    durable before the provider is called, whatever becomes of the job afterwards. The caller
    guards the circuit. Per notification: its `Delivery`, or the transient `ProviderError` after
    which its row went back to `queued` (the job should retry with backoff).
    """
    now = datetime.now(UTC)
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    claimed = session.execute(_CLAIM, {"ids": list(notification_ids), "now": now,
                                       "lease_until": now + timedelta(seconds=settings.lease_s)}).all()
    results: dict[uuid.UUID, Delivery | ProviderError] = {i: Delivery("skipped") for i in notification_ids}
    circuit = senders.circuit
    if not claimed:
        if circuit is not None:
            circuit.succeeded_or_release()
        log.info("notification.skipped", count=len(notification_ids))
        return results

    def send(row: Any) -> Sent:
        status_callback = (callback_url(twilio.status_callback_url, row.id)
                           if row.channel != "console" and twilio.status_callback_url else None)
        try:
            sender = senders.for_channel(row.channel)
            if sender is None:
                raise ProviderError(f"The {row.channel} channel needs Twilio credentials.", transient=False,
                                    details={"code": "NOT_CONFIGURED"})
            return row, sender.send(row.channel, row.recipient, row.body, status_callback=status_callback,
                                    template=row.template)
        except ProviderError as error:
            if circuit is not None and row.channel != "console":
                circuit.failed(error)
            return row, error
        except Exception as error:  # a bug in a sender: the row must not stay `sending`
            if circuit is not None:
                circuit.succeeded_or_release()
            return row, ProviderError(repr(error)[:500], transient=True, details={"code": "INTERNAL"})

    outcomes = list(run_all(send, list(claimed)))
    accepted = [(row, provider_id) for row, provider_id in outcomes if isinstance(provider_id, str)]
    if accepted:
        session.execute(_SENT, {"ids": [row.id for row, _ in accepted],
                                "provider_ids": [provider_id for _, provider_id in accepted],
                                "now": datetime.now(UTC), "secret_templates": _SECRET})
    for row, provider_id in accepted:
        if circuit is not None and row.channel != "console":
            circuit.succeeded()
        log.info("notification.sent", notification_id=str(row.id), channel=row.channel,
                 template=row.template, provider_id=provider_id, attempt=row.attempts)
        results[row.id] = Delivery("sent", provider_id)
    for row, error in outcomes:
        if isinstance(error, ProviderError):
            results[row.id] = _failed_send(session, settings, row.id, row.channel, row.template,
                                           row.attempts, error)
    return results


def _failed_send(session: Session, settings: NotificationSettings, notification_id: uuid.UUID, channel: str,
                 template: str, attempts: int, error: ProviderError) -> Delivery | ProviderError:
    """Back to `queued` (the error is returned: the job retries with backoff) while attempts remain
    for a transient error; `failed` otherwise. One log line either way."""
    again = error.transient and attempts < settings.max_attempts
    _give_up(session, notification_id, error, status="queued" if again else "failed")
    fields = {"notification_id": str(notification_id), "channel": channel, "template": template,
              "attempt": attempts, "code": _code(error), "error": error.message}
    error.logged = True
    if again:
        log.warning("notification.retrying", **fields)
        return error
    log.error("notification.failed", **fields)
    return Delivery("failed")


def _code(error: ProviderError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return str(details.get("code") or "PROVIDER_ERROR")[:32]


def _give_up(session: Session, notification_id: uuid.UUID, error: ProviderError, *, status: str) -> None:
    session.execute(_GIVE_UP, {"id": notification_id, "status": status, "code": _code(error),
                               "message": error.message[:1000], "now": datetime.now(UTC),
                               "final": status == "failed", "secret_templates": _SECRET})


# --- status callbacks ----------------------------------------------------------------------------------
#: Twilio's message statuses → ours. Twilio's own queued/sending mean "Twilio has it": our `sent`.
TWILIO_STATUSES: Final[dict[str, str]] = {
    "accepted": "sent", "scheduled": "sent", "queued": "sent", "sending": "sent", "sent": "sent",
    "delivered": "delivered", "read": "delivered",
    "undelivered": "undelivered", "failed": "failed", "canceled": "failed",
}
#: How far along each status is; a callback only ever moves a row to a higher rank.
RANK: Final = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3}
_RANK_SQL = "CASE status " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in RANK.items()) + " END"

_CALLBACK = text(f"""
UPDATE notifications
SET status = :status, provider_id = COALESCE(provider_id, :sid),
    error_code = COALESCE(:error_code, error_code), sent_at = COALESCE(sent_at, :now),
    lease_until = NULL, updated_at = :now
WHERE (provider_id = :sid OR (id = :ref AND provider_id IS NULL)) AND {_RANK_SQL} < :rank
RETURNING id
""")


async def record_status(session: AsyncSession, *, message_sid: str, twilio_status: str,
                        error_code: str | None, notification_ref: str | None) -> bool:
    """Apply one status callback; True if it moved a row (unknown sid, stale or older status: no)."""
    status = TWILIO_STATUSES.get(twilio_status.lower())
    if status is None or not message_sid:
        log.info("notification.callback_ignored", sid=message_sid, twilio_status=twilio_status)
        return False
    ref = _uuid_or_none(notification_ref)
    row = (await session.execute(_CALLBACK, {
        "status": status, "sid": message_sid[:64], "error_code": (error_code or None) and error_code[:32],
        "ref": ref, "rank": RANK[status], "now": datetime.now(UTC),
    })).first()
    log.info("notification.status", sid=message_sid, status=status, applied=row is not None,
             error_code=error_code or None)
    return row is not None


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


# --- the sweep ---------------------------------------------------------------------------------------
_REQUEUE_STUCK = text("""
WITH stuck AS (
    SELECT id FROM notifications
    WHERE COALESCE(updated_at, created_at) < :quiet_since
      AND (status = 'queued' OR (status = 'sending' AND lease_until < :now))
    ORDER BY COALESCE(updated_at, created_at)
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), touched AS (
    UPDATE notifications n SET updated_at = :now FROM stuck WHERE n.id = stuck.id RETURNING n.id
)
""" + INSERT_JOB + """
SELECT gen_random_uuid(), """ + NOTIFICATIONS_SEND.sql + """, jsonb_build_array(CAST(id AS text)),
       '{}'::jsonb, '{}'::jsonb, :now, :now
FROM touched
""")


def requeue_stuck(session: Session, settings: NotificationSettings, *, now: datetime | None = None,
                  limit: int = 1000) -> int:
    """Enqueue `notifications.send` again for rows untouched for `stuck_after_s`: `queued` (the job
    was lost: Redis restarted empty) or `sending` past its lease (the sender crashed and its message
    was lost too). Each is touched, so it is enqueued again only after as long once more; the
    claim's compare-and-set makes a duplicate job harmless."""
    now = now or datetime.now(UTC)
    params: dict[str, Any] = {"quiet_since": now - timedelta(seconds=settings.stuck_after_s), "now": now,
                              "limit": limit}
    count = cast(CursorResult[Any], session.execute(_REQUEUE_STUCK, params)).rowcount or 0
    if count:
        log.warning("notifications.requeued", count=count)
    return count
