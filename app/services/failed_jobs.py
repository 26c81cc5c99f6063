"""The failed-jobs registry: find, replay and purge failed jobs; import Redis's dead letters.

Every message whose retries ran out is a `FailedJob` row (written by the worker's
`FailedJobRecorder`), and Dramatiq also keeps it for a week in the queue's Redis dead-letter queue
(`<ns>:<q>.XQ`, scored by death time, and `<ns>:<q>.XQ.msgs`, id → encoded message). If
PostgreSQL could not take the row, the dead letter is the only copy: `import_dead_letters` writes
it to the registry and removes it from Redis only once that insert has committed.

A **replay** sends the job again on its own queue as a new message: new message id, fresh
`message_timestamp` (AgeLimit counts from it) and a fresh retry budget (`retries` 0, no `eta`, no
`traceback`). The message is enqueued first and the replay recorded after: a crash in between
sends it twice, which is safe because actors are idempotent. A job is replayed once unless forced.

Services don't commit: the caller's unit of work does (the CLI commits each replay on its own).
The filters are `failed_job_filter.JobFilter`; the admin API's use cases (replay or purge everything
matching an expected count, in the request's transaction) are `failed_jobs_admin`.
"""

from __future__ import annotations

import functools
import re
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dramatiq
from sqlalchemy import String, and_, cast, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.adapters.dead_letters import DeadLetterEraser, DeadLetters
from app.cursors import Position, decode_cursor, encode_cursor
from app.db import UnitOfWork
from app.errors import NotFound, ValidationFailed
from app.keys import JobKind
from app.logging import get_logger
from app.outbox import job_insert
from app.services import audit
from app.services.failed_job_filter import JobFilter as JobFilter
from app.services.failed_job_filter import escape_like
from app.services.failed_job_filter import parse_since as parse_since
from models.jobs import FailedJob, FailedJobReplay

log = get_logger("failed_jobs")

#: Options that belong to one delivery of a message, dropped when it is replayed.
DELIVERY_OPTIONS = frozenset({"retries", "eta", "traceback", "redis_message_id", "requeue_timestamp",
                              "ledger", "ledger_outcome"})
#: The option naming the message a replay was made from (kept on its own failure, if any).
REPLAY_OF = "replay_of"

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")

Enqueue = Callable[[dramatiq.Message[Any]], dramatiq.Message[Any]]


# --- reading -----------------------------------------------------------------------------------
def list_failed(session: Session, where: JobFilter, *, limit: int,
                cursor: str | None = None) -> tuple[list[FailedJob], str | None]:
    """Failed jobs matching `where`, newest first, `limit` per page; the next page's cursor or None."""
    query = select(FailedJob).where(*where.clauses())
    if cursor:
        after = decode_cursor(cursor, Position)
        query = query.where(or_(FailedJob.failed_at < after.at,
                                and_(FailedJob.failed_at == after.at, FailedJob.id < after.id)))
    rows = list(session.scalars(query.order_by(FailedJob.failed_at.desc(), FailedJob.id.desc())
                                .limit(limit + 1)))
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor(Position(last.failed_at, last.id)) if last else None
    return rows[:limit], next_cursor


def count_failed(session: Session, where: JobFilter) -> int:
    return int(session.scalar(select(func.count()).select_from(FailedJob).where(*where.clauses())) or 0)


def count_by_queue(session: Session) -> dict[str, int]:
    """Failed jobs in the registry per queue."""
    rows = session.execute(select(FailedJob.queue, func.count()).group_by(FailedJob.queue)).all()
    return {queue: int(n) for queue, n in rows}


def resolve(session: Session, reference: str) -> FailedJob:
    """The failed job named by its id, a unique prefix of it, or its message id (prefix)."""
    ref = reference.strip().lower()
    if not re.fullmatch(r"[0-9a-f-]{4,64}", ref):
        raise ValidationFailed(f"{reference!r} is not a failed job id (give at least 4 hex characters).",
                               details={"id": reference})
    prefix = f"{escape_like(ref)}%"
    matches = list(session.scalars(
        select(FailedJob).where(or_(cast(FailedJob.id, String).like(prefix, escape="\\"),
                                    FailedJob.message_id.like(prefix, escape="\\")))
        .order_by(FailedJob.failed_at.desc()).limit(6)))
    exact = [job for job in matches if str(job.id) == ref or job.message_id == ref]
    if len(exact) == 1:
        return exact[0]
    if not matches:
        raise NotFound(f"No failed job has an id starting with {reference}.")
    if len(matches) > 1:
        shown = ", ".join(str(job.id)[:12] for job in matches[:5])
        raise ValidationFailed(f"{reference} matches several failed jobs ({shown}…); give more characters.",
                               details={"id": reference})
    return matches[0]


def replays_of(session: Session, failed_job_id: uuid.UUID) -> list[FailedJobReplay]:
    return list(session.scalars(select(FailedJobReplay).where(FailedJobReplay.failed_job_id == failed_job_id)
                                .order_by(FailedJobReplay.id)))


def failures_of_replays(session: Session, message_ids: Sequence[str]) -> dict[str, uuid.UUID]:
    """For replays that failed again: their message id → the failed job recorded for them."""
    if not message_ids:
        return {}
    rows = session.execute(select(FailedJob.message_id, FailedJob.id)
                           .where(FailedJob.message_id.in_(list(message_ids)))).all()
    return {message_id: job_id for message_id, job_id in rows}


# --- replay ------------------------------------------------------------------------------------
def replay_message(job: FailedJob, *, now_ms: int | None = None) -> dramatiq.Message[Any]:
    """The job as a new message: new id, fresh timestamp, fresh retry budget, same queue and arguments."""
    options = {key: value for key, value in job.options.items() if key not in DELIVERY_OPTIONS}
    options["retries"] = 0
    options[REPLAY_OF] = job.message_id
    return dramatiq.Message(queue_name=job.queue, actor_name=job.actor, args=tuple(job.args),
                            kwargs=dict(job.kwargs), options=options, message_id=str(uuid.uuid4()),
                            message_timestamp=now_ms if now_ms is not None else int(time.time() * 1000))


def replay_targets(session: Session, *, references: Sequence[str] = (),
                   where: JobFilter | None = None) -> list[FailedJob]:
    """The jobs a replay is about: those named (each must exist), or all matching, oldest first."""
    if references:
        found: dict[uuid.UUID, FailedJob] = {}
        for reference in references:
            job = resolve(session, reference)
            found.setdefault(job.id, job)
        return list(found.values())
    query = select(FailedJob).where(*(where or JobFilter()).clauses())
    return list(session.scalars(query.order_by(FailedJob.failed_at, FailedJob.id)))


def skip_reason(job: FailedJob, *, force: bool,
                known_actor: Callable[[str], bool] | None = None) -> str | None:
    """Why `job` would not be replayed (None: it would be)."""
    if known_actor is not None and not known_actor(job.actor):
        return f"actor {job.actor} is not declared by this farm (renamed or removed?)"
    if job.replay_count and not force:
        when = job.replayed_at.strftime("%Y-%m-%d %H:%M:%SZ") if job.replayed_at else "?"
        times = "once" if job.replay_count == 1 else f"{job.replay_count} times"
        return f"already replayed {times}, last at {when} by {job.replayed_by} (--force replays it again)"
    return None


@dataclass(frozen=True)
class ReplayOutcome:
    job: FailedJob
    #: The new message's id, or None when skipped.
    message_id: str | None = None
    skipped: str | None = None


def replay(uow: UnitOfWork, failed_job_id: uuid.UUID, *, by: str, enqueue: Enqueue | None = None,
           force: bool = False,
           known_actor: Callable[[str], bool] | None = None,
           dead_letters: DeadLetterEraser | None = None,
           operator: audit.Operator | None = None) -> ReplayOutcome:
    """Send one failed job again and record it (commit the unit of work right after).

    The new job is written into the durable ledger in the same transaction as the replay's record
    (so it is sent exactly when the replay commits); `enqueue` sends it straight to a broker instead.

    The row is locked, so two operators replaying at once send it once. Its dead-letter copy, if
    Redis still holds one, is dropped after the commit: the registry now tracks the job.
    """
    job = uow.session.scalar(select(FailedJob).where(FailedJob.id == failed_job_id).with_for_update())
    if job is None:
        raise NotFound("The failed job is gone (purged meanwhile?).")
    reason = skip_reason(job, force=force, known_actor=known_actor)
    if reason is not None:
        return ReplayOutcome(job=job, skipped=reason)
    forced = job.replay_count > 0
    message = replay_message(job)
    if enqueue is None:
        kind = JobKind(message.actor_name, message.queue_name)
        statement, _ = job_insert(kind, message.args, message.kwargs, options=message.options,
                                  message_id=uuid.UUID(message.message_id))
        uow.session.execute(statement)
        sent = message
    else:
        sent = enqueue(message)
    now = datetime.now(UTC)
    uow.session.add(FailedJobReplay(failed_job_id=job.id, message_id=sent.message_id, replayed_by=by,
                                    replayed_at=now, forced=forced))
    job.replay_count += 1
    job.replayed_at, job.replayed_by, job.replay_message_id = now, by, sent.message_id
    redis_id = job.options.get("redis_message_id")
    if dead_letters is not None and isinstance(redis_id, str):
        uow.after_commit(lambda: dead_letters.forget(job.queue, [redis_id]))
    audit.record(uow.session, operator or audit.Operator.at_terminal(by), "job.replayed",
                 target_type="failed_job", target_id=job.id, details={"actor": job.actor, "queue": job.queue,
                                            "messageId": sent.message_id, "forced": forced})
    log.info("failed_jobs.replayed", failed_job_id=str(job.id), actor=job.actor, queue=job.queue,
             message_id=sent.message_id, by=by, forced=forced)
    return ReplayOutcome(job=job, message_id=sent.message_id)


# --- purge -------------------------------------------------------------------------------------
def purge(uow: UnitOfWork, where: JobFilter, *, by: str, dead_letters: DeadLetterEraser | None = None,
          operator: audit.Operator | None = None, action: str = "jobs.purged") -> int:
    """Delete the matching failed jobs (and their replay history); their dead letters after commit.
    The purge is audited (`action`) as `operator` (default: `by` at a terminal) with the filter and
    the count."""
    deleted = uow.session.execute(
        delete(FailedJob).where(*where.clauses())
        .returning(FailedJob.queue, FailedJob.options["redis_message_id"].astext)
    ).all()
    if dead_letters is not None:
        by_queue: dict[str, list[str]] = {}
        for queue, redis_id in deleted:
            if redis_id:
                by_queue.setdefault(queue, []).append(redis_id)
        for queue, ids in by_queue.items():
            uow.after_commit(functools.partial(dead_letters.forget, queue, ids))
    audit.record(uow.session, operator or audit.Operator.at_terminal(by), action, target_type="failed_job",
                 details={"count": len(deleted), "filter": where.describe()})
    log.info("failed_jobs.purged", count=len(deleted), by=by)
    return len(deleted)


# --- records ------------------------------------------------------------------------------------
def failed_job_row(
    message_id: str,
    queue: str,
    actor: str,
    args: list[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    exception: BaseException | None,
    message_timestamp: int | None,
    *,
    source: str,
    traceback_text: str | None = None,
    attempts: int | None = None,
) -> dict[str, Any]:
    """The `failed_jobs` row for one message (shared by the recorder and the dead-letter import).

    `attempts` is how many times the actor ran. Without it, it is derived from the message as last
    enqueued (a dead letter): `Retries` enqueues run n+1 with `retries` = n, so that plus one.
    """
    options = {k: v for k, v in options.items() if k != "traceback"}
    if exception is not None:
        tb = "".join(traceback.format_exception(exception))
        exc_type = f"{type(exception).__module__}.{type(exception).__qualname__}"
        exc_message = str(exception)
    else:
        tb = traceback_text or ""
        exc_type, exc_message = "unknown", "no exception was recorded with the message"
    enqueued_at = (
        datetime.fromtimestamp(message_timestamp / 1000, UTC) if message_timestamp else None
    )
    return {
        "message_id": message_id,
        "queue": queue.removesuffix(".DQ").removesuffix(".XQ"),
        "actor": actor,
        "args": args,
        "kwargs": kwargs,
        "options": options,
        "exception_type": exc_type[:200],
        "exception_message": exc_message,
        "traceback": tb,
        "attempts": attempts if attempts is not None else int(options.get("retries", 0)) + 1,
        "enqueued_at": enqueued_at,
        "source": source,
    }


# --- Redis dead letters ---------------------------------------------------------------------------
@dataclass
class ImportReport:
    queue: str
    #: Dead letters now in the registry that weren't before.
    imported: int = 0
    #: Dead letters whose message the registry already held (the usual copy of a recorded failure).
    already_recorded: int = 0
    #: Entries that could not be decoded (left in Redis).
    undecodable: list[str] = field(default_factory=list)


def import_dead_letters(uow: UnitOfWork, letters: DeadLetters, queue: str, redis_ids: Sequence[str],
                        report: ImportReport) -> None:
    """Write these dead letters to the registry (once per message id); they leave Redis after commit."""
    rows: dict[str, dict[str, Any]] = {}
    done: list[str] = []
    for letter in letters.read(queue, redis_ids):
        message = letter.message
        if message is None:
            report.undecodable.append(letter.redis_id)
            continue
        done.append(letter.redis_id)
        traceback_text = message.options.get("traceback")
        row = failed_job_row(message.message_id, message.queue_name, message.actor_name, list(message.args),
                             dict(message.kwargs), dict(message.options), None, message.message_timestamp,
                             source="dead-letter", traceback_text=traceback_text)
        _exception_from_traceback(row, traceback_text)
        rows.setdefault(message.message_id, row)
    if rows:
        inserted = uow.session.execute(insert(FailedJob).values(list(rows.values()))
                                       .on_conflict_do_nothing(index_elements=["message_id"])
                                       .returning(FailedJob.message_id)).all()
        report.imported += len(inserted)
        report.already_recorded += len(done) - len(inserted)
    uow.after_commit(lambda: letters.forget(queue, done))


def _exception_from_traceback(row: dict[str, Any], traceback_text: object) -> None:
    """A dead letter carries the traceback of its last retried run: name the error it ends with."""
    if not isinstance(traceback_text, str) or not traceback_text.strip():
        return
    lines = traceback_text.rstrip().splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith(" ")), default=-1)
    tail = lines[last_frame + 1:]
    match = _EXCEPTION_LINE.match(tail[0]) if tail else None
    if match:
        row["exception_type"] = match[1][:200]
        row["exception_message"] = "\n".join([match[2] or "", *tail[1:]]).strip()
