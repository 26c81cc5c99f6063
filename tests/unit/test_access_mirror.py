"""The mirror's bookkeeping, without Redis: what it may answer from memory, and when not."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from app.adapters.access_cache import AccessMirror
from app.adapters.token_store import UserSnapshot


def snapshot(user_id: uuid.UUID, generation: int = 0) -> UserSnapshot:
    return UserSnapshot(id=user_id, email="a@b.co", full_name="A", phone="+491701234567",
                        role="customer", vehicle_type=None, whatsapp_opt_in=False, is_active=True,
                        generation=generation, created_at=datetime.now(UTC))


def live_mirror() -> AccessMirror:
    mirror = AccessMirror(client=None, store=None, channel="c")  # type: ignore[arg-type]
    mirror._live = True
    return mirror


def test_a_dark_mirror_answers_nothing_from_memory() -> None:
    mirror: Any = AccessMirror(client=None, store=None, channel="c")  # type: ignore[arg-type]
    user_id = uuid.uuid4()
    mirror.remember(snapshot(user_id), mirror.epoch)
    assert mirror.user(user_id) is None


def test_a_snapshot_read_before_an_announcement_is_not_kept() -> None:
    # Given a slow-path read that started before a user change was announced
    mirror = live_mirror()
    user_id = uuid.uuid4()
    epoch = mirror.epoch
    mirror.apply(f"u|{user_id}")

    # When the (now stale) snapshot is offered
    mirror.remember(snapshot(user_id, generation=0), epoch)

    # Then it is not kept: the next check goes to Redis again
    assert mirror.user(user_id) is None


def test_an_announced_user_change_drops_the_snapshot() -> None:
    mirror = live_mirror()
    user_id = uuid.uuid4()
    mirror.remember(snapshot(user_id), mirror.epoch)
    assert mirror.user(user_id) is not None

    mirror.apply(f"u|{user_id}")

    assert mirror.user(user_id) is None


def test_a_revoked_session_is_refused_until_its_revocation_lapses() -> None:
    mirror = live_mirror()
    session_id, other = uuid.uuid4(), uuid.uuid4()
    mirror.apply(f"s|{session_id}|{int(time.time()) + 60}")
    mirror.apply(f"s|{other}|{int(time.time()) - 1}")

    assert mirror.session_revoked(session_id)
    assert not mirror.session_revoked(other)
    assert not mirror.session_revoked(uuid.uuid4())


def test_a_cache_rebuild_drops_every_snapshot() -> None:
    mirror = live_mirror()
    users = [uuid.uuid4() for _ in range(3)]
    for user_id in users:
        mirror.remember(snapshot(user_id), mirror.epoch)

    mirror.apply("r")

    assert all(mirror.user(user_id) is None for user_id in users)
