"""The outbox relay's pure logic: from an outbox row to the Dramatiq message and its delay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.db import libpq_dsn
from models import OutboxMessage
from workers.relay import build_message

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def outbox_row(*, created_ago_ms: int = 0, **options: Any) -> OutboxMessage:
    return OutboxMessage(
        id=1, message_id=uuid.uuid4(), queue="maintenance", actor="sessions.end_sockets",
        args=["user-1", "logout_all"], kwargs={"source": "api"}, options=options,
        created_at=NOW - timedelta(milliseconds=created_ago_ms),
    )


def test_a_row_becomes_a_message_with_its_own_id_actor_and_arguments() -> None:
    # Given an outbox row without a delay
    row = outbox_row(max_retries=2)
    # When it is turned into a message
    message, delay = build_message(row, NOW)
    # Then the message keeps the row's id (an idempotency key across relays) and is sent at once
    assert delay is None
    assert message.message_id == str(row.message_id)
    assert message.queue_name == "maintenance"
    assert message.actor_name == "sessions.end_sockets"
    assert message.args == ("user-1", "logout_all")
    assert message.kwargs == {"source": "api"}
    assert message.options == {"max_retries": 2}


def test_a_delayed_row_waits_only_for_what_is_left_of_its_delay() -> None:
    # Given a row written 300 ms ago with a 1 s delay
    row = outbox_row(created_ago_ms=300, delay_ms=1_000)
    # When it is relayed now
    message, delay = build_message(row, NOW)
    # Then the message waits the remaining 700 ms, and the delay is not passed on as an option
    assert delay == 700
    assert "delay_ms" not in message.options
    assert row.options == {"delay_ms": 1_000}  # the row itself is left as it was


def test_a_row_whose_delay_passed_while_it_waited_is_sent_at_once() -> None:
    # Given a row whose 1 s delay ran out while the relay was down
    row = outbox_row(created_ago_ms=5_000, delay_ms=1_000)
    # When it is relayed now
    _, delay = build_message(row, NOW)
    # Then it is not delayed any further
    assert delay is None


def test_the_listen_connection_uses_the_database_url_without_the_driver() -> None:
    dsn = libpq_dsn("postgresql+psycopg://farm:s3cret@db.internal:5433/dispatchfarm")
    assert dsn == "postgresql://farm:s3cret@db.internal:5433/dispatchfarm"
