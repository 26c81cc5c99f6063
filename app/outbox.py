"""Writing jobs: a job is a row of the durable ledger (`jobs`), written in the transaction of the
change it follows, so it exists exactly when that change committed.

The relay (`workers/relay.py`) hands due rows to Redis, woken by `NOTIFY` from a trigger on the
table; the row stays until the job's own transaction marks it done (`workers/ledger.py`). A job
with a due time (`delay_ms`, `due_at`) waits in PostgreSQL, not in Redis or a worker's memory.

Every job names a `JobKind` (actor and queue, the constants in `app/keys.py`). `add_job` /
`add_job_async` write one row through a session; `INSERT_JOB` is the same row as a SQL fragment for
the one-statement hot paths (`POST /rides`, a dispatch round, webhook ingest), which fill the queue
and actor columns with `kind.sql`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Insert, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.keys import JobKind
from models import Job

#: The columns a hot-path statement fills (`state` defaults to waiting): `INSERT_JOB VALUES (...)`
#: or `INSERT_JOB SELECT ...` with message_id, queue, actor, args (jsonb), kwargs (jsonb),
#: options (jsonb), created_at, due_at.
INSERT_JOB: Final = "INSERT INTO jobs (message_id, queue, actor, args, kwargs, options, created_at, due_at)"

#: The arbiter of the partial unique index on live dedupe keys (`ON CONFLICT ... DO NOTHING`).
LIVE_DEDUPE: Final = "(dedupe_key) WHERE dedupe_key IS NOT NULL AND state IN ('waiting', 'handed')"


def job_insert(kind: JobKind, args: tuple[Any, ...], kwargs: dict[str, Any], *,
               delay_ms: int | None = None, due_at: datetime | None = None,
               dedupe_key: str | None = None, options: dict[str, Any] | None = None,
               message_id: uuid.UUID | None = None) -> tuple[Insert, uuid.UUID]:
    """The INSERT of one job and its message id. `due_at` (or now + `delay_ms`) is when it may run;
    with a `dedupe_key`, nothing is written while a live job has the same key."""
    now = datetime.now(UTC)
    if due_at is None:
        due_at = now + timedelta(milliseconds=delay_ms) if delay_ms else now
    message_id = message_id or uuid.uuid4()
    statement = insert(Job).values(
        message_id=message_id, queue=kind.queue, actor=kind.actor, args=list(args), kwargs=kwargs,
        options=options or {}, created_at=now, due_at=due_at, dedupe_key=dedupe_key,
    )
    if dedupe_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["dedupe_key"],
            index_where=text("dedupe_key IS NOT NULL AND state IN ('waiting', 'handed')"),
        )
    return statement, message_id


def add_job(session: Session, kind: JobKind, *args: Any, delay_ms: int | None = None,
            due_at: datetime | None = None, dedupe_key: str | None = None, **kwargs: Any) -> uuid.UUID:
    """Write a job of `kind` into the ledger in this (sync) transaction; returns its message id."""
    statement, message_id = job_insert(kind, args, kwargs, delay_ms=delay_ms, due_at=due_at,
                                       dedupe_key=dedupe_key)
    session.execute(statement)
    return message_id


async def add_job_async(session: AsyncSession, kind: JobKind, *args: Any,
                        delay_ms: int | None = None, due_at: datetime | None = None,
                        dedupe_key: str | None = None, **kwargs: Any) -> uuid.UUID:
    """Write a job of `kind` into the ledger in this (async) transaction; returns its message id."""
    statement, message_id = job_insert(kind, args, kwargs, delay_ms=delay_ms, due_at=due_at,
                                       dedupe_key=dedupe_key)
    await session.execute(statement)
    return message_id
