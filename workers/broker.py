"""The Dramatiq broker, configured once per process from the settings.

Importing this module sets the global broker, so actor modules (`jobs/`) must import it first
(`jobs/__init__.py` does). Every process that enqueues or consumes uses the same namespace,
queues and middleware.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from app.keys import QUEUES
from app.redis_conn import create_sync_redis
from app.settings import Settings, get_settings
from workers.in_progress import InProgress
from workers.ledger import LedgerRetries
from workers.maintenance import BrokerMaintenance
from workers.metrics import JobMetrics
from workers.middleware import (
    BatchesMiddleware,
    FailedJobRecorder,
    LedgerRelayMiddleware,
    LogContext,
    QueuePausesView,
    QueueThroughput,
    SessionPerMessage,
)
from workers.waking import WakingRedisBroker


def build_broker(settings: Settings) -> RedisBroker:
    client = create_sync_redis(settings.redis, decode_responses=False)
    broker = WakingRedisBroker(
        client=client,
        namespace=settings.redis.dramatiq_namespace,
        heartbeat_timeout=settings.worker.heartbeat_timeout_s * 1000,
        maintenance_chance=min(settings.worker.maintenance_chance, 1_000_000),
        middleware=[],
    )
    # Order matters: `after_*` hooks run in reverse, so the recorder (listed before the retries)
    # sees the verdict the retries middleware reached for the message.
    for middleware in (
        LogContext(),
        JobMetrics(settings),  # before the retries: its after-hook must see their verdict
        QueueThroughput(),
        CurrentMessage(),
        AgeLimit(),
        TimeLimit(time_limit=5 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        FailedJobRecorder(settings),
        LedgerRetries(max_retries=10, min_backoff=1_000, max_backoff=15 * 60 * 1000),
        SessionPerMessage(settings),
        LedgerRelayMiddleware(settings),
        QueuePausesView(settings),  # before the batch threads: they are given its view
        BatchesMiddleware(settings),
        BrokerMaintenance(settings),
        InProgress(),
    ):
        broker.add_middleware(middleware)
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def _setup() -> RedisBroker:
    current = dramatiq.get_broker() if _has_broker() else None
    if isinstance(current, RedisBroker) and getattr(current, "_farm_configured", False):
        return current
    broker = build_broker(get_settings())
    broker._farm_configured = True  # type: ignore[attr-defined]
    dramatiq.set_broker(broker)
    return broker


def _has_broker() -> bool:
    return dramatiq.broker.global_broker is not None


broker = _setup()

__all__ = ["Retries", "broker", "build_broker"]
