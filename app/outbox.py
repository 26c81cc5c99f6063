"""The transactional outbox: a job is a row written in the transaction of the change it follows.

The relay (`workers/relay.py`) moves rows to Redis after commit, woken by `NOTIFY` from a trigger
on the table, so a job is never lost between a PostgreSQL commit and a Redis enqueue, and the API
never waits on Redis to enqueue.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from models import OutboxMessage


def _row(actor: str, queue: str, args: tuple[Any, ...], kwargs: dict[str, Any],
         delay_ms: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if delay_ms:
        options["delay_ms"] = int(delay_ms)
    return {
        "message_id": uuid.uuid4(),
        "queue": queue,
        "actor": actor,
        "args": list(args),
        "kwargs": kwargs,
        "options": options,
    }


def add_job(session: Session, actor: str, queue: str, *args: Any, delay_ms: int | None = None,
            **kwargs: Any) -> uuid.UUID:
    """Write a job for `actor` into the outbox of this (sync) transaction; returns its message id."""
    row = _row(actor, queue, args, kwargs, delay_ms)
    session.execute(insert(OutboxMessage).values(**row))
    return row["message_id"]


async def add_job_async(session: AsyncSession, actor: str, queue: str, *args: Any,
                        delay_ms: int | None = None, **kwargs: Any) -> uuid.UUID:
    """Write a job for `actor` into the outbox of this (async) transaction; returns its message id."""
    row = _row(actor, queue, args, kwargs, delay_ms)
    await session.execute(insert(OutboxMessage).values(**row))
    return row["message_id"]
