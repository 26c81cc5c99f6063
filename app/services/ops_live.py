"""The operations console's live figures: the worker processes (`GET /admin/workers`) and the
snapshot the clock sends to the `ops` room every 2 s (`ops:snapshot`).

Blocking (sync Redis and PostgreSQL clients): the clock calls it directly, the web process off
its event loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.adapters.queue_stats import QueueInspector
from app.adapters.worker_registry import DecisionLog, read_workers
from app.keys import RedisKeys
from app.settings import Settings
from app.timestamps import rfc3339
from models.jobs import FailedJob
from models.ops import QueuePause

#: The per-minute series of `GET /admin/queues` (an hour, oldest first).
MINUTES = 60


def workers_overview(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """`GET /admin/workers`: the live worker processes and the autoscaler's last 50 decisions."""
    items = read_workers(client, settings.redis.dramatiq_namespace,
                         heartbeat_timeout_s=settings.worker.heartbeat_timeout_s)
    decisions = DecisionLog(client, RedisKeys(settings.redis).autoscale_decisions()).latest()
    return {"items": items, "autoscaler": decisions, "at": rfc3339(datetime.now(UTC))}


def queues_body(client: redis.Redis, session: Session, settings: Settings) -> dict[str, Any]:
    """The `GET /admin/queues` body, for the snapshot.

    A stand-in until `app.services.queue_overview.queues_overview` (issue 15, part B) lands: the
    same shape, from the broker's keys and the pause rows, with empty per-minute series."""
    snapshot = QueueInspector(client, settings.redis.dramatiq_namespace,
                              heartbeat_timeout_s=settings.worker.heartbeat_timeout_s).snapshot()
    pauses = {pause.queue: pause for pause in session.scalars(select(QueuePause)).all()}
    failed = {str(queue): int(n) for queue, n in
              session.execute(select(FailedJob.queue, func.count()).group_by(FailedJob.queue)).all()}
    items = []
    for stats in snapshot.queues:
        pause = pauses.get(stats.queue)
        items.append({"queue": stats.queue, "ready": stats.ready, "delayed": stats.delayed,
                      "inFlight": stats.in_flight, "dead": stats.dead, "failed": failed.get(stats.queue, 0),
                      "inLedger": stats.in_ledger, "oldestAgeS": stats.oldest_ready_age_s,
                      "paused": pause is not None,
                      "pausedAt": rfc3339(pause.paused_at) if pause else None,
                      "pausedBy": pause.paused_by if pause else None,
                      "pauseReason": pause.reason if pause else None,
                      "throughput": [0] * MINUTES, "failures": [0] * MINUTES, "failureRate": 0.0})
    return {"items": items, "workersAlive": snapshot.live_workers, "at": rfc3339(datetime.now(UTC))}


def ops_snapshot(client: redis.Redis, session: Session, settings: Settings) -> dict[str, Any]:
    """`ops:snapshot`: {queues: <GET /admin/queues body>, workers: <GET /admin/workers body>, at}."""
    return {"queues": queues_body(client, session, settings), "workers": workers_overview(client, settings),
            "at": rfc3339(datetime.now(UTC))}
