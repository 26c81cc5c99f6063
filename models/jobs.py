"""Job bookkeeping: the transactional outbox and the durable registry of failed jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, Text
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

    __table_args__ = (
        Index("ix_failed_jobs_failed_at", "failed_at"),
        Index("ix_failed_jobs_actor_failed_at", "actor", "failed_at"),
    )
