"""One picture of every queue for operators: what Redis holds, what the ledger holds, pauses, failures
and the last hour's throughput — the body of `GET /admin/queues` and of the ops snapshot.

`queues_overview(session, redis, settings)` (sync: the clock process) and
`queues_overview_async(session, redis, settings)` (the web process: its database part on the
request's session, its Redis part — `QueueInspector` and the throughput counters are sync
redis-py — in a worker thread) answer the same dict, JSON-ready, in the contract's camelCase:

`{"items": [{"queue", "ready", "delayed", "inFlight", "dead", "failed", "inLedger", "oldestAgeS",
"paused", "pausedAt", "pausedBy", "pauseReason", "throughput", "failures", "failureRate"}],
"workersAlive", "at"}`. `failed` counts the failed jobs of the registry not yet replayed;
`throughput` and `failures` are 60 per-minute counts, oldest first (the current minute last);
`failureRate` is failures / runs over that hour (0 with no run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.adapters.queue_stats import LEDGER_BACKLOG_SQL, BrokerSnapshot, QueueInspector
from app.adapters.queue_throughput import ThroughputCounters
from app.keys import QUEUES, RedisKeys, actors_sql, batched_actors
from app.services.queue_pauses import pauses
from app.settings import Settings
from app.timestamps import rfc3339
from models.jobs import FailedJob

#: Minutes of throughput in each item.
MINUTES = 60


@dataclass(frozen=True)
class DatabaseFigures:
    #: queue → (paused at, by, reason)
    paused: dict[str, tuple[datetime, str, str | None]]
    #: queue → failed jobs not yet replayed
    failed: dict[str, int]
    #: queue → (ledger jobs batch threads have yet to finish, oldest due age s)
    ledger: dict[str, tuple[int, float]]


@dataclass(frozen=True)
class BrokerFigures:
    snapshot: BrokerSnapshot
    #: queue → (finished per minute, failed per minute)
    minutes: dict[str, tuple[list[int], list[int]]]


def database_figures(session: Session, settings: Settings) -> DatabaseFigures:
    paused = {queue: (row.paused_at, row.paused_by, row.reason) for queue, row in pauses(session).items()}
    failed = {str(queue): int(n) for queue, n in session.execute(
        select(FailedJob.queue, func.count()).where(FailedJob.replayed_at.is_(None))
        .group_by(FailedJob.queue)).all()}
    ledger: dict[str, tuple[int, float]] = {}
    actors = batched_actors(settings)
    if actors:
        rows = session.execute(text(LEDGER_BACKLOG_SQL.format(actors=actors_sql(actors)))).all()
        ledger = {str(queue): (int(n), float(age)) for queue, n, age in rows}
    return DatabaseFigures(paused=paused, failed=failed, ledger=ledger)


def broker_figures(client: redis.Redis, settings: Settings) -> BrokerFigures:
    snapshot = QueueInspector(client, settings.redis.dramatiq_namespace, queues=QUEUES,
                              heartbeat_timeout_s=settings.worker.heartbeat_timeout_s).snapshot()
    minutes = ThroughputCounters(client, RedisKeys(settings.redis)).read(QUEUES, minutes=MINUTES,
                                                                        now=snapshot.taken_at)
    return BrokerFigures(snapshot=snapshot, minutes=minutes)


def overview(db: DatabaseFigures, broker: BrokerFigures) -> dict[str, Any]:
    items = []
    for stats in broker.snapshot.queues:
        queue = stats.queue
        in_ledger, ledger_age = db.ledger.get(queue, (0, 0.0))
        pause = db.paused.get(queue)
        finished, failures = broker.minutes[queue]
        runs = sum(finished)
        items.append({
            "queue": queue, "ready": stats.ready, "delayed": stats.delayed, "inFlight": stats.in_flight,
            "dead": stats.dead, "failed": db.failed.get(queue, 0), "inLedger": in_ledger,
            "oldestAgeS": round(max(stats.oldest_ready_age_s, ledger_age), 3),
            "paused": pause is not None,
            "pausedAt": rfc3339(pause[0]) if pause else None,
            "pausedBy": pause[1] if pause else None,
            "pauseReason": pause[2] if pause else None,
            "throughput": finished, "failures": failures,
            "failureRate": round(sum(failures) / runs, 4) if runs else 0.0,
        })
    return {"items": items, "workersAlive": broker.snapshot.live_workers,
            "at": rfc3339(datetime.fromtimestamp(broker.snapshot.taken_at, UTC))}


def queues_overview(session: Session, redis: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Every queue's figures (see the module docstring); `redis` is a sync client on the broker's
    Redis (bytes or text answers both do)."""
    return overview(database_figures(session, settings), broker_figures(redis, settings))


async def queues_overview_async(session: AsyncSession, redis: redis.Redis,
                                settings: Settings) -> dict[str, Any]:
    """`queues_overview` for an event loop: the database on `session`, Redis in a worker thread."""
    db = await session.run_sync(lambda sync: database_figures(sync, settings))
    broker = await anyio.to_thread.run_sync(broker_figures, redis, settings)
    return overview(db, broker)


def queue_item(figures: dict[str, Any], queue: str) -> dict[str, Any]:
    """The item of `queue` in an overview."""
    return next(item for item in figures["items"] if item["queue"] == queue)
