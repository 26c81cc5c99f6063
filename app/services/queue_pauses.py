"""Pausing a queue: workers take no new job from it until an operator resumes it.

The truth is a row in `queue_pauses` (it survives a Redis restart). `pause` and `resume` change it
in the caller's transaction, write the audit entry beside it and `NOTIFY farm_ops` (delivered on
commit). Every worker process reads the rows through one `PausedQueues`: a thread that reloads
them every `REFRESH_S` and at once on a notification, so checking a queue on the hot path (each
fetch of a Dramatiq consumer, each claim of a batch thread) is a set lookup, never a query. When
PostgreSQL can't be reached the view keeps the last state it read (and logs that once).

What a pause holds back: Dramatiq consumers fetch nothing from the queue (and give back what they
had prefetched), batch threads claim none of its ledger rows. The relay still hands rows to Redis,
where they wait as `ready`; a job already running finishes.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import psycopg
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.keys import OPS_CHANNEL, QUEUES
from app.logging import get_logger
from app.services import audit
from models.ops import QueuePause

log = get_logger("queue_pauses")

#: How often a worker process reads the paused queues when no notification came (s).
REFRESH_S: Final = 1.0
#: How often the refresh thread checks whether it was asked to stop while it waits (s).
STOP_CHECK_S: Final = 0.25

_NOTIFY = text("SELECT pg_notify(:channel, :queue)")


def known_queue(queue: str) -> str:
    """`queue` if it is one of the farm's queues; 404 `NOT_FOUND` otherwise."""
    if queue not in QUEUES:
        raise NotFound(f"There is no queue {queue!r}.", details={"queue": queue, "queues": list(QUEUES)})
    return queue


def pauses(session: Session) -> dict[str, QueuePause]:
    """The paused queues' rows, by queue."""
    return {row.queue: row for row in session.scalars(select(QueuePause))}


def pause(session: Session, queue: str, by: audit.Operator, reason: str | None = None) -> QueuePause:
    """Pause `queue` (already paused: left as it was, by whoever paused it first), audited."""
    known_queue(queue)
    added = session.execute(
        insert(QueuePause).values(queue=queue, paused_by=by.name or by.role, reason=reason)
        .on_conflict_do_nothing(index_elements=["queue"]).returning(QueuePause.queue)).scalar()
    if added is not None:
        session.execute(_NOTIFY, {"channel": OPS_CHANNEL, "queue": queue})
    audit.record(session, by, "queue.paused", target_type="queue", target_id=queue,
                 details={"reason": reason, "alreadyPaused": added is None})
    row = session.get(QueuePause, queue, populate_existing=True)
    assert row is not None
    return row


def resume(session: Session, queue: str, by: audit.Operator) -> bool:
    """Resume `queue` (not paused: nothing changes), audited; whether it was paused."""
    known_queue(queue)
    removed = session.execute(delete(QueuePause).where(QueuePause.queue == queue)
                              .returning(QueuePause.paused_by, QueuePause.reason)).first()
    if removed is not None:
        session.execute(_NOTIFY, {"channel": OPS_CHANNEL, "queue": queue})
    audit.record(session, by, "queue.resumed", target_type="queue", target_id=queue,
                 details={"wasPaused": removed is not None,
                          "pausedBy": removed.paused_by if removed is not None else None,
                          "pauseReason": removed.reason if removed is not None else None})
    return removed is not None


class PausedQueues:
    """One worker process's view of the paused queues (see the module docstring).

    `start()` runs the refresh thread and waits (briefly) for the first read, so the consumers that
    start right after already see the pauses; `is_paused` is the hot-path check."""

    def __init__(self, dsn: str, *, refresh_s: float = REFRESH_S) -> None:
        self._dsn = dsn
        self._refresh_s = refresh_s
        self._paused: frozenset[str] = frozenset()
        self._changed = threading.Condition()
        self._loaded = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False

    @property
    def paused(self) -> frozenset[str]:
        return self._paused

    def is_paused(self, queue: str) -> bool:
        return queue in self._paused

    def wait_for_change(self, timeout: float) -> None:
        """Return when the paused set changes, or after `timeout` s."""
        with self._changed:
            self._changed.wait(timeout)

    def start(self, *, first_read_s: float = 2.0) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="paused-queues", daemon=True)
        self._thread.start()
        self._loaded.wait(first_read_s)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _set(self, paused: frozenset[str]) -> None:
        if paused != self._paused:
            log.info("queue_pauses.changed", paused=sorted(paused), before=sorted(self._paused))
            self._paused = paused
            with self._changed:
                self._changed.notify_all()
        self._loaded.set()

    def _read(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute("SELECT queue FROM queue_pauses").fetchall()
        paused = frozenset(str(row[0]) for row in rows)
        if self._down:  # said before the new set is visible, so whoever sees it change finds this line too
            log.info("queue_pauses.reachable_again", paused=sorted(paused))
            self._down = False
        self._set(paused)

    def _wait(self, conn: psycopg.Connection[Any]) -> None:
        """Until a notification, `refresh_s` s, or a stop; then take the notifications queued up."""
        deadline = time.monotonic() + self._refresh_s
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if any(True for _ in conn.notifies(timeout=min(remaining, STOP_CHECK_S), stop_after=1)):
                break
        for _ in conn.notifies(timeout=0):
            pass

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {OPS_CHANNEL}")
                    while not self._stopping.is_set():
                        self._read(conn)
                        self._wait(conn)
            except Exception as error:  # PostgreSQL away (or the connection dropped): keep what we know
                if not self._down:
                    log.warning("queue_pauses.unreachable", error=repr(error), paused=sorted(self._paused),
                                hint="keeping the last paused queues read until PostgreSQL answers")
                    self._down = True
                self._loaded.set()  # don't hold a worker's start-up for it
                self._stopping.wait(self._refresh_s)
