"""One-statement writes on raw psycopg connections in autocommit, for the web's hottest ingest paths.

A single SQL statement is atomic on its own, so a route whose whole unit of work is one statement
(a Stripe webhook: store the event and its job's outbox row, or nothing) needs no session, no
BEGIN/COMMIT and no pre-ping round trip, which is most of the web's CPU per event on such a route (figures:
`scripts/bench/bench_webhooks.py`, docs/performance.md).

Only idempotent statements belong here: a connection found broken (PostgreSQL restarted) is
dropped and the statement tried once more on a fresh one; if that fails too, `ServiceUnavailable`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, LiteralString, TypeVar, cast

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.db import libpq_dsn, pooler_safe
from app.errors import ServiceUnavailable
from app.logging import get_logger
from app.settings import DatabaseSettings

log = get_logger(__name__)

T = TypeVar("T")


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def psycopg_named(sql: str) -> LiteralString:
    """A statement written with SQLAlchemy's `:name` parameters, in psycopg's `%(name)s` style
    (so the SQL fragments shared with session code are written once). `::type` casts are kept."""
    if "%" in sql:
        raise ValueError("a literal % would need escaping as %% for psycopg")
    return cast(LiteralString, _NAMED.sub(r"%(\1)s", sql))


class StatementPool:
    """A small pool of autocommit connections that runs single idempotent statements."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self._settings = settings
        self._pool = AsyncConnectionPool(
            libpq_dsn(settings.url),
            min_size=1,
            max_size=settings.statement_pool_size,
            timeout=settings.pool_timeout_s,
            kwargs=pooler_safe({
                "autocommit": True,
                "connect_timeout": max(1, int(settings.connect_timeout_s)),
                "options": f"-c statement_timeout={settings.statement_timeout_ms}",
                "application_name": "dispatch-farm",
            }, settings),
            open=False,
            name="statements",
        )
        self._opened = False
        self._opening = asyncio.Lock()

    async def _open(self) -> None:
        async with self._opening:
            if not self._opened:
                # wait=False: a PostgreSQL that is down now fails the request, not the start-up.
                await self._pool.open(wait=False)
                self._opened = True

    async def fetch_one(self, sql: LiteralString, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run `sql` (one idempotent statement) and return its first row, if any."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone() if cursor.description else None

        return await self._with_connection(run)

    async def fetch_all(self, sql: LiteralString, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run `sql` (one idempotent statement that returns rows) and return them all."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

        return await self._with_connection(run)

    async def fetch_all_in_transaction(
        self, steps: Sequence[tuple[LiteralString, Mapping[str, Any]]]
    ) -> list[tuple[Any, ...]]:
        """`fetch_one_in_transaction`, returning every row of the last step."""
        *before, (last_sql, last_params) = steps

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            async with conn.pipeline(), conn.transaction():
                for sql, params in before:
                    await conn.execute(sql, params)
                cursor = await conn.execute(last_sql, last_params)
                return await cursor.fetchall()

        return await self._with_connection(run)

    async def fetch_one_in_transaction(
        self, steps: Sequence[tuple[LiteralString, Mapping[str, Any]]]
    ) -> tuple[Any, ...] | None:
        """Run `steps` (idempotent statements) in one transaction, pipelined (one round trip), and
        return the last one's first row (it must return rows). Under READ COMMITTED each statement
        sees what committed before it started: a lock taken by one step orders the steps after it."""
        *before, (last_sql, last_params) = steps

        async def run(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            async with conn.pipeline(), conn.transaction():
                for sql, params in before:
                    await conn.execute(sql, params)
                cursor = await conn.execute(last_sql, last_params)
                return await cursor.fetchone()  # the last step returns rows (RETURNING)

        return await self._with_connection(run)

    async def _with_connection(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` on a pooled connection; a connection that broke in use is retried once on a fresh
        one (the statements are idempotent); pool exhaustion or a second failure is a 503."""
        if not self._opened:
            await self._open()
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    return await work(conn)
            except PoolTimeout as exc:
                log.error("db.statement_pool_timeout", error=str(exc))
                raise ServiceUnavailable("PostgreSQL is unavailable; nothing was changed.",
                                         details={"dependency": "postgres"}) from exc
            except psycopg.OperationalError as exc:
                # The pool discards a connection that broke in use; one retry gets a fresh one.
                log.warning("db.statement_failed", attempt=attempt, error=str(exc))
                if attempt == 2:
                    raise ServiceUnavailable("PostgreSQL is unavailable; nothing was changed.",
                                             details={"dependency": "postgres"}) from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False
