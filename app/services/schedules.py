"""The periodic jobs: what the clock sends and how often, their last runs, and "run now".

The list lives here (not in `workers/clock.py`) so the web process can show it without importing
the workers. A run writes the job into the ledger with the dedupe key `clock:{actor}`, whether the
clock or an operator asks for it, so a job still waiting or running is never doubled; each run is
upserted into `schedule_runs` (the clock's on every tick; an operator's only when a job was
written). `runs` counts the jobs written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.keys import (
    DRIVERS_PRUNE_STALE,
    NOTIFICATIONS_RECONCILE,
    RETENTION_PRUNE,
    RIDES_RECONCILE,
    TOKENS_CLEANUP,
    JobKind,
)
from app.outbox import job_insert
from app.settings import Settings
from app.timestamps import rfc3339
from models import Job
from models.ops import ScheduleRun

CLOCK: Final = "clock"
MANUAL: Final = "manual"


@dataclass(frozen=True)
class Schedule:
    kind: JobKind
    every_s: int

    @property
    def name(self) -> str:
        return self.kind.actor

    @property
    def dedupe_key(self) -> str:
        return f"clock:{self.kind.actor}"


def periodic(settings: Settings) -> tuple[Schedule, ...]:
    """Every job the clock sends, with its interval (s)."""
    clock = settings.clock
    return (
        Schedule(TOKENS_CLEANUP, clock.tokens_cleanup_interval_s),
        Schedule(RIDES_RECONCILE, clock.reconcile_interval_s),
        Schedule(NOTIFICATIONS_RECONCILE, clock.reconcile_interval_s),
        Schedule(DRIVERS_PRUNE_STALE, clock.driver_prune_interval_s),
        Schedule(RETENTION_PRUNE, clock.retention_interval_s),
    )


def find(settings: Settings, name: str) -> Schedule:
    """The periodic job named `name` (its actor); `NotFound` for any other name."""
    for schedule in periodic(settings):
        if schedule.name == name:
            return schedule
    raise NotFound("No periodic job has this name.")


def run(session: Session, schedule: Schedule, *, trigger: str, by: str | None = None,
        now: datetime | None = None) -> uuid.UUID | None:
    """Write the job unless one is still waiting or running; the new job's id, or None.

    Records the run in `schedule_runs` (a manual run only when it wrote a job)."""
    statement, _ = job_insert(schedule.kind, (), {}, dedupe_key=schedule.dedupe_key)
    written: uuid.UUID | None = session.execute(statement.returning(Job.message_id)).scalar_one_or_none()
    if written is None and trigger == MANUAL:
        return None
    at = now or datetime.now(UTC)
    counted = 1 if written is not None else 0
    session.execute(
        insert(ScheduleRun).values(name=schedule.name, last_run_at=at, last_trigger=trigger, last_by=by,
                                   last_job_id=written, runs=counted)
        .on_conflict_do_update(index_elements=[ScheduleRun.name], set_={
            "last_run_at": at, "last_trigger": trigger, "last_by": by, "last_job_id": written,
            "runs": ScheduleRun.runs + counted})
    )
    return written


def list_schedules(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """`GET /admin/schedules` items. `nextRunAt` is the clock's next tick after its last one (the
    clock ticks every `everyS` from its start); null before the clock's first run is recorded or
    when the last run was a manual one."""
    runs = {row.name: row for row in session.scalars(select(ScheduleRun)).all()}
    items = []
    for schedule in periodic(settings):
        row = runs.get(schedule.name)
        next_run = (row.last_run_at + timedelta(seconds=schedule.every_s)
                    if row is not None and row.last_trigger == CLOCK else None)
        items.append({"name": schedule.name, "queue": schedule.kind.queue, "everyS": schedule.every_s,
                      "lastRunAt": rfc3339(row.last_run_at) if row else None,
                      "lastTrigger": row.last_trigger if row else None,
                      "lastBy": row.last_by if row else None,
                      "nextRunAt": rfc3339(next_run) if next_run else None,
                      "runs": row.runs if row else 0})
    return items
