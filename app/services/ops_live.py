"""The operations console's live figures: the worker processes (`GET /admin/workers`) and the
snapshot the clock sends to the `ops` room every 2 s (`ops:snapshot`).

Blocking (sync Redis and PostgreSQL clients): the clock calls it directly, the web process off
its event loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy.orm import Session

from app.adapters.worker_registry import DecisionLog, read_workers
from app.keys import RedisKeys
from app.services.queue_overview import queues_overview
from app.settings import Settings
from app.timestamps import rfc3339


def workers_overview(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """`GET /admin/workers`: the live worker processes and the autoscaler's last 50 decisions."""
    items = read_workers(client, settings.redis.dramatiq_namespace,
                         heartbeat_timeout_s=settings.worker.heartbeat_timeout_s)
    decisions = DecisionLog(client, RedisKeys(settings.redis).autoscale_decisions()).latest()
    return {"items": items, "autoscaler": decisions, "at": rfc3339(datetime.now(UTC))}


def ops_snapshot(client: redis.Redis, session: Session, settings: Settings) -> dict[str, Any]:
    """`ops:snapshot`: {queues: <GET /admin/queues body>, workers: <GET /admin/workers body>, at}."""
    return {"queues": queues_overview(session, client, settings),
            "workers": workers_overview(client, settings), "at": rfc3339(datetime.now(UTC))}
