"""What each process may open against PostgreSQL, and connection options fit for PgBouncer."""

from __future__ import annotations

from pathlib import Path

import structlog

from app.connection_budget import budget_of, log_budget
from app.db import _connect_args
from app.settings import load_settings

NO_FILE = Path("/nonexistent.env")


def test_each_process_counts_every_pool_it_opens() -> None:
    settings = load_settings({"DB_POOL_SIZE": "6", "DB_MAX_OVERFLOW": "2", "DB_STATEMENT_POOL_SIZE": "4",
                              "WORKER_THREADS": "3", "WORKER_PROCESSES": "2"}, env_file=NO_FILE)

    assert budget_of("web", settings).total == 6 + 2 + 4
    # per Dramatiq process: a connection per thread and per batch thread (2 dispatchers, 1 sender)
    # + 2, the overflow, and the LISTEN of the relay and of each batch thread
    assert budget_of("worker", settings).parts == {"orm pool": 16, "orm overflow": 4, "relay listen": 2,
                                                   "batch threads listen": 6}
    unbatched = load_settings({"WORKER_THREADS": "3", "DISPATCH_BATCHED": "false", "NOTIFY_BATCHED": "0",
                               "DB_MAX_OVERFLOW": "0"}, env_file=NO_FILE)
    assert budget_of("worker", unbatched).parts == {"orm pool": 5, "orm overflow": 0, "relay listen": 1,
                                                    "batch threads listen": 0}
    assert budget_of("clock", settings).total == 1 + 2


def test_every_process_logs_its_budget_at_start() -> None:
    settings = load_settings({}, env_file=NO_FILE)
    configured = structlog.get_config()
    structlog.reset_defaults()  # whatever level an earlier test configured, capture INFO here
    try:
        with structlog.testing.capture_logs() as logs:
            log_budget("web", settings)
    finally:
        structlog.configure(**configured)
    [event] = [e for e in logs if e["event"] == "db.connection_budget"]
    assert event["process"] == "web" and event["max_connections"] == 10 + 10 + 32
    assert event["statement_pool"] == 32


def test_behind_pgbouncer_no_prepared_statements_and_no_startup_options() -> None:
    direct = load_settings({}, env_file=NO_FILE).db
    pooled = load_settings({"DB_PGBOUNCER": "true",
                            "DATABASE_URL": "postgresql+psycopg://u@bouncer:6432/farm",
                            "DATABASE_DIRECT_URL": "postgresql+psycopg://u@db:5432/farm"},
                           env_file=NO_FILE).db

    assert "statement_timeout" in _connect_args(direct)["options"]
    assert "prepare_threshold" not in _connect_args(direct)
    assert "options" not in _connect_args(pooled)
    assert _connect_args(pooled)["prepare_threshold"] is None
    # the relay's LISTEN and migrations go straight to PostgreSQL
    assert pooled.unpooled_url == "postgresql+psycopg://u@db:5432/farm"
    assert direct.unpooled_url == direct.url
