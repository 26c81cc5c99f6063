"""Failed jobs, audit entries and bookings as records: the JSON the admin API answers with and the
JSON lines `farmctl jobs … --json`, `farmctl audit --json` and `farmctl bookings … --json` print
(the same shape in both)."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from app.services.bookings.views import BookingView
from app.timestamps import rfc3339
from models import AuditEntry
from models.jobs import FailedJob, FailedJobReplay


class Record(msgspec.Struct, rename="camel", kw_only=True):
    """Base of the records (camelCase keys, as every response body of the API)."""


class FailedJobOut(Record):
    """One failed job of the registry (without its traceback: see `FailedJobDetail`)."""

    id: uuid.UUID
    message_id: str
    queue: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    attempts: int
    exception_type: str
    exception_message: str
    enqueued_at: str | None
    failed_at: str
    #: `worker` (recorded by the worker) or `dead-letter` (imported from Redis).
    source: str
    replay_count: int
    replayed_at: str | None
    replayed_by: str | None
    replay_message_id: str | None

    @classmethod
    def fields_of(cls, job: FailedJob) -> dict[str, Any]:
        return {
            "id": job.id, "message_id": job.message_id, "queue": job.queue, "actor": job.actor,
            "args": list(job.args), "kwargs": dict(job.kwargs), "options": dict(job.options),
            "attempts": job.attempts, "exception_type": job.exception_type,
            "exception_message": job.exception_message,
            "enqueued_at": rfc3339(job.enqueued_at) if job.enqueued_at else None,
            "failed_at": rfc3339(job.failed_at), "source": job.source, "replay_count": job.replay_count,
            "replayed_at": rfc3339(job.replayed_at) if job.replayed_at else None,
            "replayed_by": job.replayed_by, "replay_message_id": job.replay_message_id,
        }

    @classmethod
    def of(cls, job: FailedJob) -> FailedJobOut:
        return cls(**cls.fields_of(job))


class ReplayOut(Record):
    message_id: str
    replayed_at: str
    replayed_by: str
    forced: bool
    #: The failed job recorded for this replay, if it failed again.
    failed_again: uuid.UUID | None = None

    @classmethod
    def of(cls, replay: FailedJobReplay, failed_again: uuid.UUID | None) -> ReplayOut:
        return cls(message_id=replay.message_id, replayed_at=rfc3339(replay.replayed_at),
                   replayed_by=replay.replayed_by, forced=replay.forced, failed_again=failed_again)


class FailedJobDetail(FailedJobOut):
    """A failed job with its full traceback and every replay."""

    traceback: str
    replays: list[ReplayOut]

    @classmethod
    def of_detail(cls, job: FailedJob, replays: list[ReplayOut]) -> FailedJobDetail:
        return cls(**cls.fields_of(job), traceback=job.traceback, replays=replays)


class AuditActor(Record):
    id: uuid.UUID | None
    #: `admin` (an account over the API), `cli` (a person at a terminal) or `system`.
    role: str


class AuditTarget(Record):
    type: str
    id: str | None


class AuditEntryOut(Record):
    """One row of the audit log (also the JSON `farmctl audit --json` prints)."""

    id: str
    at: str
    action: str
    actor: AuditActor
    #: The person: the admin's email, or `farmctl --by` (default `user@host`).
    operator: str | None
    target: AuditTarget | None
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        target = AuditTarget(type=entry.target_type, id=entry.target_id) if entry.target_type else None
        return cls(id=str(entry.id), at=rfc3339(entry.at), action=entry.action,
                   actor=AuditActor(id=entry.actor_id, role=entry.actor_role), operator=entry.operator,
                   target=target, details=dict(entry.details or {}))


# --- time-slot bookings (`GET /bookings`, `GET /admin/bookings`, `farmctl bookings … --json`) -------
class MoneyRecord(Record):
    amount: int
    currency: str


class ActorRecord(Record):
    id: uuid.UUID | None
    role: str


class HistoryRecord(Record):
    """One status change: `{from, to, by: {id, role}, at, reason}` (as a ride's `history[]`)."""

    from_: str | None = msgspec.field(name="from")
    to: str
    by: ActorRecord
    at: str
    reason: str | None


class BookingPaymentOut(Record):
    status: str
    #: The booking's customer only: what Stripe.js confirms the card hold with.
    client_secret: str | None = None


class BookingOut(Record):
    id: uuid.UUID
    customer_id: uuid.UUID
    provider_id: uuid.UUID
    region: str
    service: str | None
    status: str
    start: str
    end: str
    time_zone: str
    local_start: str
    local_end: str
    payment_method: str
    price: MoneyRecord
    hold_expires_at: str
    confirmed_at: str | None
    payment: BookingPaymentOut | None
    history: list[HistoryRecord]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, view: BookingView) -> BookingOut:
        b = view.booking
        zone = ZoneInfo(b.time_zone)
        return cls(
            id=b.id, customer_id=b.customer_id, provider_id=b.provider_id, region=b.region_code,
            service=b.service, status=b.status, start=rfc3339(b.starts_at), end=rfc3339(b.ends_at),
            time_zone=b.time_zone, local_start=b.starts_at.astimezone(zone).isoformat(),
            local_end=b.ends_at.astimezone(zone).isoformat(), payment_method=b.payment_method,
            price=MoneyRecord(amount=b.amount, currency=b.currency),
            hold_expires_at=rfc3339(b.hold_expires_at),
            confirmed_at=rfc3339(b.confirmed_at) if b.confirmed_at else None,
            payment=(BookingPaymentOut(status=view.payment_status, client_secret=view.client_secret)
                     if view.payment_status else None),
            history=[HistoryRecord(from_=e.from_status, to=e.to_status,
                                   by=ActorRecord(id=e.actor_id, role=e.actor_role), at=rfc3339(e.at),
                                   reason=e.reason) for e in view.history],
            created_at=rfc3339(b.created_at), updated_at=rfc3339(b.updated_at),
        )


