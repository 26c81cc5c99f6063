"""The workers' engine pings only connections that sat idle, and recovers from a dropped one."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import text

from app.db import create_sync_engine, libpq_dsn
from app.settings import Settings


def _terminate(settings: Settings, pid: int) -> None:
    with psycopg.connect(libpq_dsn(settings.db.url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_postgres_dropped_is_replaced_before_use(settings: Settings,
                                                                   database: str) -> None:
    # Given a pooled connection, idle past the ping threshold, that PostgreSQL has since terminated
    engine = create_sync_engine(settings.db, pool_size=1, ping_idle_after_s=0.0)
    try:
        with engine.connect() as conn:
            first = conn.scalar(text("SELECT pg_backend_pid()"))
        _terminate(settings, first)
        # When it is checked out again, Then the ping finds it dead and a fresh one does the work
        with engine.connect() as conn:
            second = conn.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        engine.dispose()


def test_a_busy_connection_is_not_pinged_and_a_drop_fails_one_use_only(settings: Settings,
                                                                      database: str) -> None:
    # Given a connection reused within the idle threshold (no ping), dropped by PostgreSQL
    engine = create_sync_engine(settings.db, pool_size=1, ping_idle_after_s=3600.0)
    try:
        with engine.connect() as conn:
            first = conn.scalar(text("SELECT pg_backend_pid()"))
        _terminate(settings, first)
        # When it is used, Then that one use fails (a job would be retried by Dramatiq) ...
        with pytest.raises(sqlalchemy.exc.OperationalError), engine.connect() as conn:
            conn.scalar(text("SELECT 1"))
        # ... and the next use gets a fresh connection
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_backend_pid()")) != first
    finally:
        engine.dispose()
