"""How many PostgreSQL connections each kind of process may open, at most, from its settings.

PostgreSQL refuses connections past `max_connections` (100 by default, 3 of them kept for
superusers), so a deployment's replicas times these figures must fit under it, or go through
PgBouncer (`DB_PGBOUNCER`, docs/operations.md). Every process logs its own figure at start
(`db.connection_budget`); `tests/unit/test_deploy_manifests.py` adds up the Kubernetes manifests'.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from app.keys import QUEUE_DISPATCH, QUEUE_NOTIFICATIONS
from app.logging import get_logger
from app.settings import Settings

#: Connections `farmctl db upgrade` holds while it runs (the create-database check, then alembic).
MIGRATION_CONNECTIONS = 2


def batch_threads(settings: Settings, queues: Collection[str] | None = None) -> int:
    """The batch threads (`workers/batches.py`) of one worker process serving `queues` (None: all)."""
    dispatch = settings.dispatch.threads if settings.dispatch.batched else 0
    notifications = 1 if settings.notifications.batched else 0
    if queues is not None:
        dispatch = dispatch if QUEUE_DISPATCH in queues else 0
        notifications = notifications if QUEUE_NOTIFICATIONS in queues else 0
    return dispatch + notifications


def worker_pool_size(settings: Settings, queues: Collection[str] | None = None) -> int:
    """A worker process's ORM pool: one connection per Dramatiq thread and per batch thread, plus
    the relay's passes and the maintenance thread."""
    return max(2, settings.worker.threads + batch_threads(settings, queues) + 2)


@dataclass(frozen=True)
class ConnectionBudget:
    """The most connections one process of `process` opens, by what opens them."""

    process: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def budget_of(process: str, settings: Settings, queues: Collection[str] | None = None) -> ConnectionBudget:
    """`web`, `worker` (one `workers.run` serving `queues`, None: all; all its Dramatiq processes)
    or `clock`."""
    db = settings.db
    if process == "web":
        return ConnectionBudget(process, {"orm pool": db.pool_size, "orm overflow": db.max_overflow,
                                          "statement pool": db.statement_pool_size})
    if process == "worker":
        processes = settings.worker.processes
        return ConnectionBudget(process, {"orm pool": worker_pool_size(settings, queues) * processes,
                                          "orm overflow": db.max_overflow * processes,
                                          "relay listen": processes,
                                          "batch threads listen": batch_threads(settings, queues)
                                          * processes})
    if process == "clock":
        return ConnectionBudget(process, {"orm pool": 1, "orm overflow": db.max_overflow})
    raise ValueError(f"no connection budget for a {process!r} process")


def log_budget(process: str, settings: Settings) -> ConnectionBudget:
    """Log what this process may open (`db.connection_budget`), so an operator can add it up."""
    budget = budget_of(process, settings)
    parts = {name.replace(" ", "_"): count for name, count in budget.parts.items()}
    get_logger("db").info("db.connection_budget", process=process, max_connections=budget.total,
                          pgbouncer=settings.db.pgbouncer, **parts)
    return budget
