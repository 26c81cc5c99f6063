"""What Dramatiq's Redis broker holds, per queue, read cheaply (no `KEYS`, no scans).

Dramatiq keeps, under its namespace (see `shared/DRAMATIQ-NOTES.md`):
`<ns>:<q>` (list of ready ids, consumed from the left), `<ns>:<q>.msgs` (hash of every unacked
message: ready and in flight), `<ns>:<q>.DQ` / `.DQ.msgs` (delayed), `<ns>:<q>.XQ` (sorted set of
dead letters) and `<ns>:__heartbeats__` (sorted set: worker id → last heartbeat, ms).

Per queue that is a handful of O(1) commands in one pipeline, plus one `HGET` of the oldest ready
message to date it: `ready = LLEN q`, `in_flight = HLEN q.msgs - LLEN q`,
`delayed = HLEN q.DQ.msgs`, `dead = ZCARD q.XQ`. The oldest ready message's age counts from when it
became ready — its `eta` for a delayed message or a retry, else its enqueue time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
import psycopg
import redis

from app.keys import QUEUES, WORKER_REGISTRY


@dataclass(frozen=True)
class QueueStats:
    queue: str
    ready: int
    in_flight: int
    delayed: int
    dead: int
    #: Seconds since the oldest ready message became ready (0 when none is ready).
    oldest_ready_age_s: float
    #: Jobs of the queue that batch threads run straight from the ledger (not through Redis): due
    #: or being run (`LedgerBacklog`; 0 without one). Counted with `ready` by the autoscaler.
    in_ledger: int = 0


@dataclass(frozen=True)
class WorkerBeat:
    """A process with a Dramatiq heartbeat: a worker (in the registry, with its card) or a process
    that only enqueues (web, clock)."""

    worker_id: str
    last_beat_age_s: float
    alive: bool
    #: From the worker registry (`workers/maintenance.py`): host, pid, queues, threads; None for a
    #: process that only enqueues.
    card: dict[str, Any] | None = None

    @property
    def is_worker(self) -> bool:
        return self.card is not None


@dataclass(frozen=True)
class BrokerSnapshot:
    queues: list[QueueStats]
    workers: list[WorkerBeat]
    taken_at: float

    def queue(self, name: str) -> QueueStats:
        return next(q for q in self.queues if q.queue == name)

    @property
    def live_workers(self) -> int:
        """Worker processes (registered) with a fresh heartbeat; enqueue-only processes don't count."""
        return sum(1 for w in self.workers if w.alive and w.is_worker)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _card(raw: Any) -> dict[str, Any]:
    try:
        card = json.loads(raw)
    except (ValueError, TypeError):
        return {}
    return card if isinstance(card, dict) else {}


def _int(value: Any) -> int:
    return int(value or 0)


def _ready_since_ms(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        message = dramatiq.Message.decode(raw if isinstance(raw, bytes) else raw.encode())
    except Exception:  # an undecodable message still counts; it just can't be dated
        return None
    eta = message.options.get("eta")
    return float(max(message.message_timestamp, int(eta) if eta else 0))


#: Per queue: jobs of the actors `{actors}` due or being run, and the oldest one's due age (s).
LEDGER_BACKLOG_SQL = """
SELECT queue, count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(due_at)), 0)
FROM jobs WHERE state IN ('waiting', 'handed') AND due_at <= now() AND {actors}
GROUP BY queue
"""


class LedgerBacklog:
    """Per queue, the jobs batch threads run from the ledger that are due or running, and how long
    the oldest has been due: the part of a queue's depth Redis does not hold."""

    def __init__(self, dsn: str, actors_predicate: str) -> None:
        self._dsn = dsn
        self._sql = LEDGER_BACKLOG_SQL.format(actors=actors_predicate)
        self._conn: psycopg.Connection[Any] | None = None

    def read(self) -> dict[str, tuple[int, float]]:
        """{queue: (jobs, oldest due age s)}; PostgreSQL unreachable: raises (the caller decides)."""
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
                rows = self._conn.execute(self._sql).fetchall()
                return {str(q): (int(n), float(age)) for q, n, age in rows}
            except psycopg.OperationalError:
                self.close()
                if attempt == 2:
                    raise
        return {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class QueueInspector:
    """Reads queue depths, ages and worker heartbeats from the broker's keys (and, given a
    `LedgerBacklog`, what batch threads have yet to run)."""

    def __init__(self, client: redis.Redis, namespace: str, *, heartbeat_timeout_s: float,
                 queues: tuple[str, ...] = QUEUES, ledger: LedgerBacklog | None = None) -> None:
        self._redis = client
        self._ns = namespace
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self.queues = queues
        self._ledger = ledger

    def key(self, queue: str, suffix: str = "") -> str:
        return f"{self._ns}:{queue}{suffix}"

    def snapshot(self) -> BrokerSnapshot:
        pipe = self._redis.pipeline(transaction=False)
        for queue in self.queues:
            pipe.llen(self.key(queue))
            pipe.hlen(self.key(queue, ".msgs"))
            pipe.hlen(self.key(queue, ".DQ.msgs"))
            pipe.zcard(self.key(queue, ".XQ"))
            pipe.lindex(self.key(queue), 0)
        pipe.zrange(f"{self._ns}:__heartbeats__", 0, -1, withscores=True)
        pipe.hgetall(f"{self._ns}:{WORKER_REGISTRY}")
        results = pipe.execute()
        heads: dict[str, Any] = {}
        rows: list[tuple[str, int, int, int, int]] = []
        for i, queue in enumerate(self.queues):
            ready, unacked, delayed, dead, head = results[i * 5:(i + 1) * 5]
            rows.append((queue, _int(ready), _int(unacked), _int(delayed), _int(dead)))
            if head is not None:
                heads[queue] = head
        beats, registry = results[-2], results[-1]
        cards = {_text(k): _card(v) for k, v in registry.items()}
        now = time.time()
        raw_heads: dict[str, Any] = {}
        if heads:
            pipe = self._redis.pipeline(transaction=False)
            for queue, head in heads.items():
                pipe.hget(self.key(queue, ".msgs"), head)
            raw_heads = dict(zip(heads, pipe.execute(), strict=True))
        backlog = self._ledger.read() if self._ledger is not None else {}
        stats = []
        for queue, ready, unacked, delayed, dead in rows:
            since_ms = _ready_since_ms(raw_heads.get(queue))
            age = max(0.0, now - since_ms / 1000) if since_ms is not None and ready else 0.0
            in_ledger, ledger_age = backlog.get(queue, (0, 0.0))
            stats.append(QueueStats(queue=queue, ready=ready, in_flight=max(0, unacked - ready),
                                    delayed=delayed, dead=dead, in_ledger=in_ledger,
                                    oldest_ready_age_s=round(max(age, ledger_age), 3)))
        workers = []
        for member, score in beats:
            age = max(0.0, now - float(score) / 1000)
            name = _text(member)
            workers.append(WorkerBeat(worker_id=name, last_beat_age_s=round(age, 3),
                                      alive=age <= self._heartbeat_timeout_s, card=cards.get(name)))
        return BrokerSnapshot(queues=stats, workers=workers, taken_at=now)
