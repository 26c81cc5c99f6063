"""`tokens.cleanup`, as the clock sends it, run by a real worker on the run's Redis and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.services import tokens as tokens_service
from app.settings import Settings, get_settings
from models import RefreshToken, RevokedSession, Role, User
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    clock_tick,
    db_fixture,
    drain,
    failed_jobs,
    start_worker_fixture,
)


def seed(db: sessionmaker[Session], settings: Settings) -> dict[str, uuid.UUID]:
    """A user with refresh tokens and revoked sessions in every state the cleanup tells apart."""
    now = datetime.now(UTC)
    retention = timedelta(seconds=settings.auth.token_retention_s)
    long_ago = now - retention - timedelta(hours=1)
    tokens = {
        "expired_long_ago": {"expires_at": long_ago},
        "revoked_long_ago": {"expires_at": now - timedelta(hours=1), "revoked_at": long_ago},
        "valid": {"expires_at": now + timedelta(days=5)},
        "expired_recently": {"expires_at": now - timedelta(days=1)},
        "revoked_recently": {"expires_at": now + timedelta(days=3), "revoked_at": now - timedelta(hours=1)},
    }
    ids: dict[str, uuid.UUID] = {}
    with db.begin() as session:
        user = User(email=f"{uuid.uuid4().hex}@example.com", password_hash="not-a-real-hash",
                    full_name="A customer", phone="+4917012345678", role=Role.CUSTOMER)
        session.add(user)
        session.flush()
        for name, fields in tokens.items():
            token = RefreshToken(user_id=user.id, family_id=uuid.uuid4(),
                                 token_hash=hashlib.sha256(name.encode()).hexdigest(),
                                 issued_at=now - timedelta(days=30), **fields)
            session.add(token)
            session.flush()
            ids[name] = token.id
        for name, expires_at in (("lapsed_revocation", now - timedelta(minutes=1)),
                                 ("live_revocation", now + timedelta(minutes=10))):
            ids[name] = uuid.uuid4()
            session.add(RevokedSession(session_id=ids[name], user_id=user.id, reason="logout",
                                       expires_at=expires_at))
    return ids


def remaining(db: sessionmaker[Session]) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    with db() as session:
        return (set(session.scalars(select(RefreshToken.id))),
                set(session.scalars(select(RevokedSession.session_id))))


def test_cleanup_deletes_exactly_the_tokens_nobody_can_use_any_more(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given refresh tokens and revocations in every state, and a worker
    ids = seed(db, settings)
    start_worker(relay=get_settings())
    # When the clock sends the cleanup
    clock_tick(db, "tokens.cleanup")
    # Then tokens expired or revoked longer ago than the retention, and lapsed revocations, are gone
    tokens, revocations = remaining(db)
    assert tokens == {ids["valid"], ids["expired_recently"], ids["revoked_recently"]}
    assert revocations == {ids["live_revocation"]}
    assert failed_jobs(db) == []

    # When it runs again
    clock_tick(db, "tokens.cleanup")
    # Then nothing more is deleted
    assert remaining(db) == (tokens, revocations)
    assert failed_jobs(db) == []


def test_a_backlog_larger_than_one_batch_is_purged_in_one_run(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given seven stale refresh tokens, one fresh one, and a cleanup that deletes three per batch
    monkeypatch.setattr(tokens_service, "BATCH", 3)
    now = datetime.now(UTC)
    stale_expiry = now - timedelta(seconds=settings.auth.token_retention_s) - timedelta(days=1)
    with db.begin() as session:
        user = User(email=f"{uuid.uuid4().hex}@example.com", password_hash="not-a-real-hash",
                    full_name="A driver", phone="+4917012345678", role=Role.DRIVER)
        session.add(user)
        session.flush()
        for n, expires_at in enumerate([stale_expiry] * 7 + [now + timedelta(days=1)]):
            session.add(RefreshToken(user_id=user.id, family_id=uuid.uuid4(),
                                     token_hash=hashlib.sha256(f"t{n}".encode()).hexdigest(),
                                     expires_at=expires_at))
    start_worker(relay=get_settings())
    # When the clock sends the cleanup once
    clock_tick(db, "tokens.cleanup")
    # Then only the fresh token is left
    tokens, _ = remaining(db)
    assert len(tokens) == 1
    with db() as session:
        assert session.get(RefreshToken, tokens.pop()).expires_at > now  # type: ignore[union-attr]
