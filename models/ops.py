"""Operator state of the farm itself: paused queues and the clock's runs of its periodic jobs."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class QueuePause(Base):
    """A paused queue: workers take no new message from it until the row is deleted (resume).

    The row is the truth; Redis holds a mirror the consumers read, rebuilt from these rows."""

    __tablename__ = "queue_pauses"

    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    #: The operator who paused it: an admin's email (API) or `--by` / `user@host` (CLI).
    paused_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)


class ScheduleRun(Base):
    """The last time each periodic job was written into the ledger, by the clock or by "run now"."""

    __tablename__ = "schedule_runs"

    #: The periodic job's actor name, e.g. `tokens.cleanup`.
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    #: `clock` or `manual`.
    last_trigger: Mapped[str] = mapped_column(String(16))
    #: Who asked for a manual run (None for the clock).
    last_by: Mapped[str | None] = mapped_column(String(200))
    #: The ledger job written by that run (None when one was still waiting and none was added).
    last_job_id: Mapped[uuid.UUID | None]
    runs: Mapped[int] = mapped_column(default=1, server_default="1")
