"""Job bookkeeping: the transactional outbox and the durable registry of failed jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, uuid_pk


class OutboxMessage(Base):
    """A job written in the same transaction as the change that causes it; relayed to Redis."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = created_at()


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
