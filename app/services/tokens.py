"""Token housekeeping: purge refresh tokens and session revocations nobody can use any more."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, delete, or_, select
from sqlalchemy.orm import Session

from models import RefreshToken, RevokedSession

BATCH = 5_000


@dataclass(frozen=True)
class PurgeReport:
    refresh_tokens: int
    revoked_sessions: int


def purge_expired(session: Session, *, now: datetime, retention: timedelta) -> PurgeReport:
    """Delete refresh tokens expired or revoked more than `retention` ago, and lapsed revocations.

    Works in batches so a large backlog never holds long locks; safe to run twice.
    """
    cutoff = now - retention
    stale = or_(RefreshToken.expires_at < cutoff, RefreshToken.revoked_at < cutoff)
    tokens = 0
    while True:
        ids = select(RefreshToken.id).where(stale).limit(BATCH).scalar_subquery()
        deleted = _rowcount(session.execute(delete(RefreshToken).where(RefreshToken.id.in_(ids))))
        tokens += deleted
        if not deleted or deleted < BATCH:
            break
    sessions = _rowcount(session.execute(delete(RevokedSession).where(RevokedSession.expires_at < now)))
    return PurgeReport(refresh_tokens=tokens, revoked_sessions=sessions)


def _rowcount(result: Result[Any]) -> int:
    """Rows a DELETE removed (a DML statement's result is a `CursorResult`)."""
    return cast(CursorResult[Any], result).rowcount or 0
