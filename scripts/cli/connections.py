"""What a command works on: PostgreSQL sessions and units of work, and the broker's Redis.

Each command opens its own small engine or client and closes it before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from app.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from app.adapters.dead_letters import DeadLetters
    from app.db import UnitOfWork

T = TypeVar("T")


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


async def with_uow(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(uow)` in one transaction on the async engine, committing on success."""
    from app.db import async_session_factory, async_unit_of_work, create_async_db_engine

    engine = create_async_db_engine(get_settings().db)
    try:
        async with async_unit_of_work(async_session_factory(engine)) as uow:
            return await action(uow)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def database_sessions() -> Iterator[sessionmaker[Session]]:
    """Sync sessions on a small engine of the command's own (disposed at the end)."""
    from app.db import create_sync_engine, sync_session_factory

    engine = create_sync_engine(get_settings().db, pool_size=1)
    try:
        yield sync_session_factory(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[UnitOfWork]:
    """One transaction: committed (then its after-commit actions run) unless the block raises."""
    from app import db

    with db.unit_of_work(sessions) as uow:
        yield uow


def broker_redis() -> redis.Redis:
    from app.redis_conn import create_sync_redis

    return create_sync_redis(get_settings().redis, decode_responses=False)


def dead_letters(client: redis.Redis) -> DeadLetters:
    from app.adapters.dead_letters import DeadLetters

    return DeadLetters(client, get_settings().redis.dramatiq_namespace)
