"""The ledger relay's pure logic: from a ledger row to the Dramatiq message it hands over."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.db import libpq_dsn
from models import Job
from workers.ledger import LEDGER_OPTION
from workers.relay import build_message

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def ledger_row(**options: object) -> Job:
    return Job(
        id=41, message_id=uuid.uuid4(), queue="maintenance", actor="sessions.end_sockets",
        args=["user-1", "logout_all"], kwargs={"source": "api"}, options=options, attempts=2,
        created_at=NOW, due_at=NOW,
    )


def test_a_row_becomes_a_message_with_its_own_id_actor_arguments_and_run_count() -> None:
    # Given a ledger row that already failed twice
    row = ledger_row(max_retries=5)
    # When it is turned into a message
    message = build_message(row)
    # Then the message keeps the row's id (the idempotency key across hand-overs), names its row,
    # and carries how many runs already failed
    assert message.message_id == str(row.message_id)
    assert message.queue_name == "maintenance"
    assert message.actor_name == "sessions.end_sockets"
    assert message.args == ("user-1", "logout_all")
    assert message.kwargs == {"source": "api"}
    assert message.options == {"max_retries": 5, LEDGER_OPTION: 41, "retries": 2}
    assert row.options == {"max_retries": 5}  # the row itself is left as it was


def test_the_listen_connection_uses_the_database_url_without_the_driver() -> None:
    dsn = libpq_dsn("postgresql+psycopg://farm:s3cret@db.internal:5433/dispatchfarm")
    assert dsn == "postgresql://farm:s3cret@db.internal:5433/dispatchfarm"
