"""Job bookkeeping: the durable job ledger and the registry of failed jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, utcnow, uuid_pk


class JobState(StrEnum):
    """Where a job of the ledger is: waiting in PostgreSQL, handed to Redis, or finished."""

    WAITING = "waiting"  # due at `due_at`; the relay hands it to Redis then
    HANDED = "handed"  # a message is in Redis (or a worker's hands) until `lease_until`
    DONE = "done"  # its run committed (the mark is written in the job's own transaction)
    FAILED = "failed"  # retries exhausted or refused: a `failed_jobs` row holds it for replay


#: The states in which a job will still run (a dedupe key is unique among them).
LIVE_STATES = (JobState.WAITING.value, JobState.HANDED.value)


class Job(Base):
    """The durable job ledger: every job is a row here from the transaction that caused it until its
    own transaction marks it done. Redis only carries the message while the row is `handed`."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=JobState.WAITING.value,
                                       server_default=JobState.WAITING.value)
    due_at: Mapped[datetime] = mapped_column(server_default=func.now(), default=utcnow)
    created_at: Mapped[datetime] = created_at()
    #: Failed runs so far (a deferral while a provider's circuit is open is not one).
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    handed_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    #: The Redis data set (`ledger.epoch` key) the message was handed to, and its id there.
    epoch: Mapped[str | None] = mapped_column(String(40))
    redis_message_id: Mapped[str | None] = mapped_column(String(40))
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    #: At most one live job per key (periodic jobs, a ride's expiry): a second insert is a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("state IN ('waiting', 'handed', 'done', 'failed')", name="state"),
        Index("ix_jobs_waiting_due_at", "due_at", postgresql_where=text("state = 'waiting'")),
        # The dispatchers' rows, the notification senders' and everything else (the relay's): 0008.
        Index("ix_jobs_waiting_dispatch_due_at", "due_at", postgresql_where=text(
            "state = 'waiting' AND actor IN ('dispatch.step', 'dispatch.check_bids')")),
        Index("ix_jobs_waiting_notifications_due_at", "due_at", postgresql_where=text(
            "state = 'waiting' AND actor IN ('notifications.send')")),
        Index("ix_jobs_waiting_relay_due_at", "due_at", postgresql_where=text(
            "state = 'waiting' AND actor NOT IN"
            " ('dispatch.step', 'dispatch.check_bids', 'notifications.send')")),
        Index("ix_jobs_handed_lease_until", "lease_until", postgresql_where=text("state = 'handed'")),
        Index("ix_jobs_finished_at", "finished_at", postgresql_where=text("state = 'done'")),
        Index("uq_jobs_live_dedupe_key", "dedupe_key", unique=True,
              postgresql_where=text("dedupe_key IS NOT NULL AND state IN ('waiting', 'handed')")),
    )


class FailedJob(Base):
    """A message whose retries are exhausted (or that was refused outright): what replay needs."""

    __tablename__ = "failed_jobs"

    id: Mapped[uuid.UUID] = uuid_pk()
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    exception_type: Mapped[str] = mapped_column(String(200))
    exception_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int]
    enqueued_at: Mapped[datetime | None]
    failed_at: Mapped[datetime] = created_at()
    #: `worker` when recorded by the worker middleware, `dead-letter` when imported from Redis.
    source: Mapped[str] = mapped_column(String(16), default="worker")
    #: Replays so far, and the latest one (its history: `FailedJobReplay`).
    replay_count: Mapped[int] = mapped_column(default=0, server_default="0")
    replayed_at: Mapped[datetime | None]
    replayed_by: Mapped[str | None] = mapped_column(String(200))
    replay_message_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_failed_jobs_failed_at", "failed_at"),
        Index("ix_failed_jobs_actor_failed_at", "actor", "failed_at"),
    )


class FailedJobReplay(Base):
    """One replay of a failed job: who sent it again, when, and under which new message id."""

    __tablename__ = "failed_job_replays"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    failed_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("failed_jobs.id", ondelete="CASCADE"),
                                                     index=True)
    message_id: Mapped[str] = mapped_column(String(64))
    replayed_by: Mapped[str] = mapped_column(String(200))
    replayed_at: Mapped[datetime] = created_at()
    #: Whether `--force` was needed (the job had been replayed before).
    forced: Mapped[bool] = mapped_column(default=False)
