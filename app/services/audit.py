"""The audit log: who did what to which thing, written in the same transaction as the action.

Rows are only ever added (a trigger refuses UPDATE and DELETE, migration 0006). Each names its
`Operator`: an admin account over the API (its id, role and email) or a person at a terminal
(`farmctl … --by NAME`, by default `user@host`). Read newest first with `list_entries`, filtered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.cursors import decode_cursor, encode_cursor
from models import AuditEntry

if TYPE_CHECKING:
    from app.services.access import Principal

#: `actor_role` of an action taken at a terminal with `farmctl`.
CLI = "cli"


@dataclass(frozen=True)
class Operator:
    """Who acted: an account (API), or a named person at a terminal (CLI, no account)."""

    role: str
    name: str | None = None
    account_id: uuid.UUID | None = None

    @classmethod
    def at_terminal(cls, name: str) -> Operator:
        return cls(role=CLI, name=name[:200])

    @classmethod
    def of_caller(cls, caller: Principal) -> Operator:
        """An authenticated API caller (an admin, for every audited route)."""
        return cls(role=caller.role, name=caller.user.email, account_id=caller.id)


def record(session: Session | AsyncSession, operator: Operator, action: str, *,
           target_type: str | None = None, target_id: object = None,
           details: dict[str, Any] | None = None) -> None:
    """Add one audit row to the caller's transaction (it commits or rolls back with the action)."""
    session.add(AuditEntry(actor_id=operator.account_id, actor_role=operator.role, operator=operator.name,
                           action=action, target_type=target_type,
                           target_id=None if target_id is None else str(target_id)[:64],
                           details=details or {}))


@dataclass(frozen=True)
class AuditFilter:
    """Which rows to read; a field left at None matches all. `action` ending in `.` is a prefix."""

    action: str | None = None
    actor_id: uuid.UUID | None = None
    operator: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.action:
            found.append(AuditEntry.action.startswith(self.action, autoescape=True)
                         if self.action.endswith(".") else AuditEntry.action == self.action)
        if self.actor_id:
            found.append(AuditEntry.actor_id == self.actor_id)
        if self.operator:
            found.append(AuditEntry.operator.icontains(self.operator, autoescape=True))
        if self.target_type:
            found.append(AuditEntry.target_type == self.target_type)
        if self.target_id:
            found.append(AuditEntry.target_id == self.target_id)
        if self.since:
            found.append(AuditEntry.at >= self.since)
        if self.until:
            found.append(AuditEntry.at < self.until)
        return found


def list_entries(session: Session, where: AuditFilter, *, limit: int,
                 cursor: str | None = None) -> tuple[list[AuditEntry], str | None]:
    """Rows matching `where`, newest first (by id: the order they were written), and the next
    page's cursor (None on the last page)."""
    query = select(AuditEntry).where(*where.clauses())
    if cursor:
        query = query.where(AuditEntry.id < decode_cursor(cursor, int))
    rows = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
