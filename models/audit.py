"""The append-only audit log of admin and security-relevant actions (a trigger refuses edits)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now(), index=True)
    actor_id: Mapped[uuid.UUID | None]
    #: `customer`, `driver`, `admin`, `system` or `cli` (an operator at a terminal).
    actor_role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: The person behind the action: an admin's email (API) or `--by` / `user@host` (CLI).
    operator: Mapped[str | None] = mapped_column(String(200))
