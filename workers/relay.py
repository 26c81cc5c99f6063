"""The ledger relay: hands due jobs from PostgreSQL (`jobs`) to the Dramatiq queues in Redis.

Every worker process runs one; they cooperate through `FOR UPDATE SKIP LOCKED`. A pass:

1. **Epoch.** `<ns>:__farm_epoch__` names the Redis data set messages are handed to; a Redis
   restarted empty (or flushed) has none, so the first relay to see that writes a new one and
   every row handed under another epoch goes back to `waiting` at once: its message is gone.
2. **Hand over** the rows due now, oldest due first, in batches: enqueue each through the broker
   (its middleware and message format; the message carries the row's id in its `ledger` option),
   then mark them `handed` with a lease, the epoch and their Redis id, and commit. A crash or a
   Redis error before the commit leaves them `waiting` (a message already enqueued then runs
   twice at most, and acts once: `workers.ledger.claim`).
3. **Leases** (every `LEDGER_LEASE_CHECK_INTERVAL` s): a `handed` row past its lease whose message
   Redis still holds (ready, in flight or prefetched by a live worker) gets a new lease; one whose
   message is gone (lost with a killed worker, a failed retry) is handed again; and done jobs
   older than `LEDGER_DONE_RETENTION` are deleted, a bounded batch at a time (a message delivered
   after that finds no row, which its claim reads as done).

Rounds, bid checks and notification sends are not handed over: batch threads run them straight
from the ledger (`workers/batches.py`; unless `DISPATCH_BATCHED` / `NOTIFY_BATCHED` is off).

It sleeps on `LISTEN` (a trigger notifies when a row becomes waiting) until the next row is due,
at most `RELAY_POLL_INTERVAL` s, so a new job is handed over within milliseconds and a job due
later is handed over when due: no delayed message waits in Redis or in a worker's memory.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import Counter
from typing import Any, Final

import dramatiq
import psycopg
import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from sqlalchemy import TextClause, text

from app.db import libpq_dsn
from app.keys import DISPATCH_CHANNEL, NOTIFICATIONS_CHANNEL, OUTBOX_CHANNEL
from app.logging import get_logger
from app.settings import Settings
from workers.batches import actors_sql, batched_actors
from workers.ledger import LEDGER_OPTION

log = get_logger("workers.relay")

#: How often a relay waiting for a notification checks whether it was asked to stop (seconds).
STOP_CHECK_S = 0.25
#: Inside the Dramatiq namespace: the id of the Redis data set (absent after a restart empty).
EPOCH_KEY: Final = "__farm_epoch__"
#: A relay that finds due rows all locked by other relays waits this long before looking again.
BUSY_WAIT_S = 0.05

_DUE_SQL = """
SELECT id, message_id, queue, actor, args, kwargs, options, attempts FROM jobs
WHERE state = 'waiting' AND due_at <= now() {only}
ORDER BY due_at LIMIT :limit
FOR UPDATE SKIP LOCKED
"""
_NEXT_DUE_SQL = "SELECT EXTRACT(EPOCH FROM min(due_at) - now()) FROM jobs WHERE state = 'waiting' {only}"


@functools.cache
def _statements(skip: tuple[str, ...]) -> tuple[TextClause, TextClause]:
    """(due rows, seconds until the next is due), leaving out the rows of the actors in `skip` (the
    ones batch threads run: `workers.batches`), with the predicate of migration 0008's index."""
    only = f"AND {actors_sql(skip, negate=True)}" if skip else ""
    return text(_DUE_SQL.format(only=only)), text(_NEXT_DUE_SQL.format(only=only))


_HANDED = text("""
UPDATE jobs SET state = 'handed', handed_at = now(), lease_until = now() + make_interval(secs => :lease_s),
                epoch = :epoch, redis_message_id = handed.redis_id
FROM unnest(CAST(:ids AS bigint[]), CAST(:redis_ids AS text[])) AS handed(id, redis_id)
WHERE jobs.id = handed.id
""")

_OTHER_EPOCH = text("""
UPDATE jobs SET state = 'waiting', due_at = now(), lease_until = NULL, redis_message_id = NULL
WHERE id IN (SELECT id FROM jobs WHERE state = 'handed' AND epoch IS DISTINCT FROM :epoch
               AND redis_message_id IS NOT NULL  -- a dispatcher's rows were never in Redis
             FOR UPDATE SKIP LOCKED)
""")

_LAPSED = text("""
SELECT id, queue, redis_message_id FROM jobs
WHERE state = 'handed' AND lease_until < now()
ORDER BY lease_until LIMIT :limit
FOR UPDATE SKIP LOCKED
""")

_RENEW = text("""
UPDATE jobs SET lease_until = now() + make_interval(secs => :lease_s) WHERE id = ANY(CAST(:ids AS bigint[]))
""")

_HAND_AGAIN = text("""
UPDATE jobs SET state = 'waiting', due_at = now(), lease_until = NULL, redis_message_id = NULL
WHERE id = ANY(CAST(:ids AS bigint[]))
""")

_PRUNE_DONE = text("""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE state = 'done' AND finished_at < now() - make_interval(secs => :retention_s)
    ORDER BY finished_at LIMIT :limit FOR UPDATE SKIP LOCKED)
""")


def build_message(row: Any) -> dramatiq.Message[Any]:
    """The Dramatiq message for a ledger row: its own message id, a fresh timestamp, its run count."""
    options = {**(row.options or {}), LEDGER_OPTION: int(row.id), "retries": int(row.attempts)}
    return dramatiq.Message(queue_name=row.queue, actor_name=row.actor, args=tuple(row.args or ()),
                            kwargs=dict(row.kwargs or {}), options=options, message_id=str(row.message_id),
                            message_timestamp=int(time.time() * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEpoch:
    """The id of the Redis data set, made by whoever first finds it missing."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self.key = f"{namespace}:{EPOCH_KEY}"

    def current(self) -> str:
        value = self._client.get(self.key)
        if value is None:
            self._client.set(self.key, uuid.uuid4().hex, nx=True)
            value = self._client.get(self.key)
        return _text(value)


def hand_over(broker: Broker, sessions: Any, *, epoch: str, batch_size: int, lease_s: float,
              skip: tuple[str, ...] = ()) -> int:
    """Hand one batch of due jobs to Redis (not those of the actors in `skip`); returns how many."""
    with sessions.begin() as session:
        rows = session.execute(_statements(skip)[0], {"limit": batch_size}).all()
        if not rows:
            return 0
        redis_ids = [broker.enqueue(build_message(row)).options["redis_message_id"] for row in rows]
        session.execute(_HANDED, {"ids": [row.id for row in rows], "redis_ids": redis_ids,
                                  "epoch": epoch, "lease_s": lease_s})
    wake = getattr(broker, "wake", None)  # consumers waiting for work start now (workers/waking.py)
    if wake is not None:
        wake(Counter(row.queue for row in rows))
    return len(rows)


def hand_again_other_epochs(sessions: Any, epoch: str) -> int:
    """Every job handed to a Redis data set that is gone goes back to waiting (due now)."""
    with sessions.begin() as session:
        return int(session.execute(_OTHER_EPOCH, {"epoch": epoch}).rowcount or 0)


def check_leases(broker: RedisBroker, sessions: Any, *, lease_s: float, limit: int = 1000) -> tuple[int, int]:
    """Renew the lapsed leases of messages Redis still holds; hand the others again. (renewed, lost)"""
    with sessions.begin() as session:
        rows = session.execute(_LAPSED, {"limit": limit}).all()
        if not rows:
            return 0, 0
        pipe = broker.client.pipeline(transaction=False)
        for row in rows:
            for queue in (row.queue, dq_name(row.queue)):
                pipe.hexists(f"{broker.namespace}:{queue}.msgs", row.redis_message_id or "-")
        present = pipe.execute()
        held = [row.id for i, row in enumerate(rows) if present[2 * i] or present[2 * i + 1]]
        lost = [row.id for i, row in enumerate(rows) if not (present[2 * i] or present[2 * i + 1])]
        if held:
            session.execute(_RENEW, {"ids": held, "lease_s": lease_s})
        if lost:
            session.execute(_HAND_AGAIN, {"ids": lost})
    if lost:
        log.warning("ledger.lost_messages_handed_again", count=len(lost))
    return len(held), len(lost)


def prune_done(sessions: Any, *, retention_s: float, limit: int) -> int:
    """Delete one bounded batch of jobs done longer than `retention_s` ago; returns how many."""
    with sessions.begin() as session:
        return int(session.execute(_PRUNE_DONE, {"retention_s": retention_s, "limit": limit}).rowcount or 0)


def seconds_until_next_due(sessions: Any, *, skip: tuple[str, ...] = ()) -> float | None:
    with sessions.begin() as session:
        value = session.execute(_statements(skip)[1]).scalar()
    return None if value is None else float(value)


class LedgerRelay(threading.Thread):
    def __init__(self, broker: RedisBroker, settings: Settings, sessions: Any = None) -> None:
        super().__init__(name="ledger-relay", daemon=True)
        self.broker = broker
        self.settings = settings
        self._sessions = sessions
        self._stopping = threading.Event()
        self._epochs = RedisEpoch(broker.client, broker.namespace)
        self.epoch: str | None = None
        self._leases_checked = 0.0
        self._redis_down = False

    @property
    def sessions(self) -> Any:
        if self._sessions is None:  # the worker's own pool, looked up each time (it may be replaced)
            from workers.resources import get_resources

            return get_resources().sessions
        return self._sessions

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def sync_epoch(self) -> str:
        """Read the Redis data set's id; when it is new to this relay, hand again what was lost."""
        current = self._epochs.current()
        if current != self.epoch:
            again = hand_again_other_epochs(self.sessions, current)
            if self.epoch is not None or again:
                log.warning("ledger.redis_data_set_changed", epoch=current, handed_again=again)
            self.epoch = current
        return current

    def drain(self) -> int:
        """One pass (see the module docstring); returns how many jobs were handed over."""
        worker = self.settings.worker
        epoch = self.sync_epoch()
        moved = 0
        while not self._stopping.is_set():
            count = hand_over(self.broker, self.sessions, epoch=epoch, batch_size=worker.relay_batch_size,
                              lease_s=worker.ledger_lease_s, skip=batched_actors(self.settings))
            moved += count
            if count < worker.relay_batch_size:
                break
        if time.monotonic() - self._leases_checked >= worker.ledger_lease_check_interval_s:
            check_leases(self.broker, self.sessions, lease_s=worker.ledger_lease_s)
            prune_done(self.sessions, retention_s=worker.ledger_done_retention_s,
                       limit=worker.ledger_prune_batch)
            self._leases_checked = time.monotonic()
        if moved:
            log.debug("ledger.handed_over", count=moved)
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

    def _pause(self) -> float:
        """How long to sleep before the next pass: until the next job is due, at most the poll interval."""
        interval = self.settings.worker.relay_poll_interval_s
        due_in = seconds_until_next_due(self.sessions, skip=batched_actors(self.settings))
        if due_in is None:
            return interval
        return min(interval, max(BUSY_WAIT_S, due_in))

    def run(self) -> None:
        interval = self.settings.worker.relay_poll_interval_s
        while not self._stopping.is_set():
            try:
                with psycopg.connect(libpq_dsn(self.settings.db.unpooled_url), autocommit=True,
                                     connect_timeout=5) as listen_conn:
                    listen_conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    if not self.settings.dispatch.batched:  # the dispatch jobs are the relay's too
                        listen_conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
                    if not self.settings.notifications.batched:  # and the notification sends
                        listen_conn.execute(f"LISTEN {NOTIFICATIONS_CHANNEL}")
                    log.info("ledger.relay_started")
                    pause = 0.0
                    while not self._stopping.is_set():
                        self._wait(listen_conn, pause)
                        pause = self._pass()
            except Exception as error:  # PostgreSQL away: the rows wait; connect again shortly
                log.error("ledger.relay_error", error=repr(error))
                self._stopping.wait(min(1.0, interval))

    def _pass(self) -> float:
        """Run one pass; returns how long to wait before the next. A Redis outage is logged once
        (the rows wait in PostgreSQL) and retried every second; other errors go to `run`."""
        try:
            self.drain()
            if self._redis_down:
                log.info("ledger.redis_back")
                self._redis_down = False
            return self._pause()
        except redis.RedisError as error:
            if not self._redis_down:
                log.error("ledger.redis_unreachable", error=repr(error))
                self._redis_down = True
            return min(1.0, self.settings.worker.relay_poll_interval_s)
