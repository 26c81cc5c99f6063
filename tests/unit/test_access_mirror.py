"""The mirror's bookkeeping, without Redis: what it may answer from memory, and when not."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from app.adapters.access_cache import AccessMirror, Silence
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


def test_a_read_held_up_by_a_busy_event_loop_counts_only_the_wait_it_asked_for() -> None:
    silence = Silence()

    # A 1 s wait that came back after 7 s (the loop was busy elsewhere), then two on time
    silence.waited(asked_s=1.0, took_s=7.0)
    silence.waited(asked_s=1.0, took_s=1.0)
    silence.waited(asked_s=1.0, took_s=0.25)

    assert silence.silent_s == 2.25
    assert silence.since_ping_s == 2.25


def test_a_reply_ends_the_silence_and_a_ping_restarts_the_ping_count() -> None:
    silence = Silence()
    silence.waited(asked_s=1.0, took_s=1.0)
    silence.waited(asked_s=1.0, took_s=1.0)

    silence.pinged()
    assert (silence.silent_s, silence.since_ping_s) == (2.0, 0.0)
    silence.heard()
    assert silence.silent_s == 0.0
