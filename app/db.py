"""Database engines and units of work.

The web process uses the async engine (psycopg 3 async); workers, the clock and the CLI use the
sync engine (Dramatiq runs actors in threads). A unit of work owns one session and the actions
that must only run once its transaction has committed (enqueues, socket emits).

Every boundary runs its work the same way: `unit_of_work` (sync) and `async_unit_of_work` commit
when the block ends, roll back if it raises, and close the session either way. A job's unit of
work is opened and closed by the worker middleware, around the wrapper that commits it
(`committed`, then `UnitOfWork.end`).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from app.errors import ServiceUnavailable
from app.logging import get_logger
from app.settings import DatabaseSettings

log = get_logger(__name__)

AfterCommit = Callable[[], Any] | Callable[[], Awaitable[Any]]


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`) as libpq and raw psycopg read it (`postgresql://…`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    return pooler_safe({
        "connect_timeout": max(1, int(settings.connect_timeout_s)),
        "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        "application_name": "dispatch-farm",
    }, settings)


def pooler_safe(connect_args: dict[str, Any], settings: DatabaseSettings) -> dict[str, Any]:
    """`connect_args` fit for PgBouncer in transaction mode when `DB_PGBOUNCER` is set: no prepared
    statements (a transaction may run on another server connection) and no `options` startup
    parameter (PgBouncer refuses it; the role's own `statement_timeout` applies instead)."""
    if not settings.pgbouncer:
        return connect_args
    return {**{k: v for k, v in connect_args.items() if k != "options"}, "prepare_threshold": None}


#: A pooled connection idle longer than this (s) is pinged before use (see `create_sync_engine`).
IDLE_PING_AFTER_S = 10.0


def create_sync_engine(settings: DatabaseSettings, *, pool_size: int | None = None,
                       ping_idle_after_s: float = IDLE_PING_AFTER_S) -> Engine:
    """The engine of workers, the clock and the CLI.

    Instead of SQLAlchemy's pre-ping on every checkout (a round trip per job: ~11 % of a busy
    worker's time), a connection is pinged only when it sat idle in the pool longer than
    `ping_idle_after_s` — the ones a PostgreSQL restart can have broken unnoticed. A connection that
    breaks while in use fails that job, which Dramatiq retries on a fresh one.
    """
    engine = create_engine(
        settings.url,
        pool_size=pool_size or settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        echo=settings.echo,
        connect_args=_connect_args(settings),
    )
    _ping_idle_connections(engine, ping_idle_after_s)
    return engine


def _ping_idle_connections(engine: Engine, idle_s: float) -> None:
    @event.listens_for(engine, "checkin")
    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: psycopg.Connection[Any], record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= idle_s:
            return
        autocommit = dbapi_connection.autocommit
        try:
            dbapi_connection.autocommit = True  # the ping opens no transaction
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.autocommit = autocommit
        except psycopg.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            log.warning("db.idle_connection_dropped", error=str(exc))
            raise DisconnectionError(str(exc)) from exc


def create_async_db_engine(settings: DatabaseSettings) -> AsyncEngine:
    return create_async_engine(
        settings.url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        echo=settings.echo,
        connect_args=_connect_args(settings),
    )


def sync_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    """A sync session plus the actions to run after its commit (used by jobs and the CLI)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[Callable[[], Any]] = []

    def after_commit(self, action: Callable[[], Any]) -> None:
        self._after_commit.append(action)

    def commit(self) -> None:
        self.session.commit()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    def rollback(self) -> None:
        self._after_commit.clear()
        self.session.rollback()

    def close(self) -> None:
        self.session.close()

    def end(self) -> None:
        """Roll back what did not commit (nothing, after a commit), then close."""
        try:
            self.rollback()
        finally:
            self.close()


@contextlib.contextmanager
def committed(uow: UnitOfWork) -> Iterator[UnitOfWork]:
    """`uow` committed (then its after-commit actions run) when the block ends; rolled back if the
    block or the commit raises. It stays open: for a unit of work closed by whoever opened it."""
    try:
        yield uow
        uow.commit()
    except BaseException:
        uow.rollback()
        raise


@contextlib.contextmanager
def unit_of_work(sessions: Callable[[], Session]) -> Iterator[UnitOfWork]:
    """A unit of work on a new session: committed when the block ends, rolled back if the block or
    the commit raises, closed either way."""
    uow = UnitOfWork(sessions())
    try:
        with committed(uow):
            yield uow
    finally:
        uow.close()


class AsyncUnitOfWork:
    """An async session, the actions to run after its commit, and compensations if it rolls back.

    Compensations undo what a service had to do *before* the commit for safety (e.g. a cache
    entry made stricter first); they run best-effort when the transaction does not commit.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._after_commit: list[AfterCommit] = []
        self._on_rollback: list[AfterCommit] = []

    def after_commit(self, action: AfterCommit) -> None:
        self._after_commit.append(action)

    def on_rollback(self, action: AfterCommit) -> None:
        self._on_rollback.append(action)

    async def commit(self) -> None:
        try:
            await self.session.commit()
        except BaseException:
            await self.rollback()
            raise
        self._on_rollback.clear()
        await self.run_after_commit()

    async def run_after_commit(self) -> None:
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            result = action()
            if inspect.isawaitable(result):
                await result

    async def rollback(self) -> None:
        self._after_commit.clear()
        compensations, self._on_rollback = self._on_rollback, []
        try:
            await self.session.rollback()
        finally:
            for action in compensations:
                try:
                    result = action()
                    if inspect.isawaitable(result):
                        await result
                except Exception as error:
                    log.error("uow.compensation_failed", error=repr(error))

    async def close(self) -> None:
        await self.session.close()


def _keeps_nothing(error: BaseException) -> bool:
    return False


@contextlib.asynccontextmanager
async def async_unit_of_work(
    sessions: Callable[[], AsyncSession], *,
    commit: Callable[[AsyncUnitOfWork], Awaitable[None]] = AsyncUnitOfWork.commit,
    keeps_changes: Callable[[BaseException], bool] = _keeps_nothing,
) -> AsyncIterator[AsyncUnitOfWork]:
    """A unit of work on a new session: committed (`commit`) when the block ends, rolled back if the
    block raises — unless `keeps_changes(error)`: then committed before the error goes on — and
    closed either way. A commit that fails rolls itself back (`AsyncUnitOfWork.commit`)."""
    uow = AsyncUnitOfWork(sessions())
    try:
        try:
            yield uow
        except BaseException as error:
            if keeps_changes(error):
                await commit(uow)
            else:
                await uow.rollback()
            raise
        await commit(uow)
    finally:
        await uow.close()


@contextlib.asynccontextmanager
async def short_transaction(sessions: async_sessionmaker[AsyncSession], *,
                            lock_timeout_ms: int) -> AsyncIterator[AsyncSession]:
    """A transaction of its own, committed on leaving the block, whose lock waits end after
    `lock_timeout_ms` (`SET LOCAL lock_timeout`) with a 503 `SERVICE_UNAVAILABLE` (reason
    `LOCK_TIMEOUT`) instead of a hang. For the web's use cases around a provider call, which
    must hold no connection (and no lock) while the provider answers: read, call, record."""
    try:
        async with sessions() as session, session.begin():
            await session.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
            yield session
    except OperationalError as error:
        if not isinstance(error.orig, psycopg.errors.LockNotAvailable):
            raise
        log.warning("db.lock_timeout", timeout_ms=lock_timeout_ms)
        raise ServiceUnavailable("The record is busy; try again shortly.",
                                 details={"dependency": "postgres", "reason": "LOCK_TIMEOUT"}) from error
