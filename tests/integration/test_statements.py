"""The autocommit statement pool behind webhook ingest: survives a dropped connection, and answers
`ServiceUnavailable` (503) quickly when PostgreSQL is unreachable."""

from __future__ import annotations

import dataclasses
import socket
import time

import psycopg
import pytest

from app.db import libpq_dsn
from app.errors import ServiceUnavailable
from app.settings import Settings
from app.statements import StatementPool


async def test_a_connection_postgres_dropped_is_replaced_without_an_error(settings: Settings,
                                                                          database: str) -> None:
    # Given a pool whose one connection PostgreSQL has since terminated (as a restart would)
    pool = StatementPool(dataclasses.replace(settings.db, statement_pool_size=1))
    try:
        first = await pool.fetch_one("SELECT pg_backend_pid()", {})
        assert first is not None
        with psycopg.connect(libpq_dsn(settings.db.url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first[0],))
        # When the next statement runs
        second = await pool.fetch_one("SELECT pg_backend_pid()", {})
        # Then it ran on a fresh connection instead of failing the request
        assert second is not None and second[0] != first[0]
    finally:
        await pool.close()


async def test_an_unreachable_postgres_is_service_unavailable_within_the_pool_timeout(
        settings: Settings) -> None:
    # Given a pool pointed at a port where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = dataclasses.replace(settings.db, url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
                             pool_timeout_s=1.0, connect_timeout_s=1.0)
    pool = StatementPool(db)
    try:
        started = time.monotonic()
        # When a statement is asked for, Then it is ServiceUnavailable naming PostgreSQL, not a hang
        with pytest.raises(ServiceUnavailable) as caught:
            await pool.fetch_one("SELECT 1", {})
        assert caught.value.details == {"dependency": "postgres"}
        assert time.monotonic() - started < 5
    finally:
        await pool.close()
