"""The outbox relay: moves committed outbox rows to the Dramatiq queues.

Each pass locks a batch with `FOR UPDATE SKIP LOCKED` (so any number of relays cooperate),
enqueues the messages through the broker (its middleware and message format), deletes the rows
and commits. A crash between enqueue and commit re-sends the batch: delivery is at-least-once and
actors are idempotent. The relay sleeps on `LISTEN`, so a new row is relayed within milliseconds,
and polls every `relay_poll_interval_s` in case a notification was missed.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq
import psycopg
from dramatiq import Broker
from sqlalchemy import delete, select

from app.db import libpq_dsn
from app.keys import OUTBOX_CHANNEL
from app.logging import get_logger
from app.settings import Settings
from models import OutboxMessage

log = get_logger("workers.relay")

#: How often a relay waiting for a notification checks whether it was asked to stop (seconds).
STOP_CHECK_S = 0.25


def build_message(row: OutboxMessage, now: datetime) -> tuple[dramatiq.Message[Any], int | None]:
    """The Dramatiq message for an outbox row and the delay still to wait (ms), if any."""
    options = dict(row.options or {})
    delay_ms = options.pop("delay_ms", None)
    remaining: int | None = None
    if delay_ms:
        due = row.created_at.timestamp() * 1000 + int(delay_ms)
        remaining = max(0, int(due - now.timestamp() * 1000)) or None
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=row.queue,
        actor_name=row.actor,
        args=tuple(row.args or ()),
        kwargs=dict(row.kwargs or {}),
        options=options,
        message_id=str(row.message_id),
        message_timestamp=int(time.time() * 1000),
    )
    return message, remaining


def relay_batch(broker: Broker, sessions: Any, batch_size: int) -> int:
    """Relay one batch; returns how many rows were moved."""
    with sessions.begin() as session:
        rows = session.scalars(
            select(OutboxMessage).order_by(OutboxMessage.id).limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        now = datetime.now(UTC)
        for row in rows:
            message, delay = build_message(row, now)
            broker.enqueue(message, delay=delay)
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])))
    return len(rows)


class OutboxRelay(threading.Thread):
    def __init__(self, broker: Broker, settings: Settings) -> None:
        super().__init__(name="outbox-relay", daemon=True)
        self.broker = broker
        self.settings = settings
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def drain(self) -> int:
        from workers.resources import get_resources

        sessions = get_resources().sessions
        moved = 0
        while not self._stopping.is_set():
            count = relay_batch(self.broker, sessions, self.settings.worker.relay_batch_size)
            moved += count
            if count < self.settings.worker.relay_batch_size:
                break
        if moved:
            log.debug("outbox.relayed", count=moved)
        return moved

    def _wait(self, listen_conn: psycopg.Connection[Any], interval: float) -> None:
        """Return on a notification, after `interval` seconds, or within moments of `stop()`."""
        deadline = time.monotonic() + interval
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in listen_conn.notifies(timeout=min(remaining, STOP_CHECK_S), stop_after=1):
                return

    def run(self) -> None:
        interval = self.settings.worker.relay_poll_interval_s
        while not self._stopping.is_set():
            try:
                with psycopg.connect(libpq_dsn(self.settings.db.url), autocommit=True,
                                     connect_timeout=5) as listen_conn:
                    listen_conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    log.info("outbox.relay_started")
                    self.drain()
                    while not self._stopping.is_set():
                        self._wait(listen_conn, interval)
                        self.drain()
            except Exception as error:
                log.error("outbox.relay_error", error=repr(error))
                self._stopping.wait(min(5.0, interval))
