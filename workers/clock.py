"""The `clock` process: APScheduler sends periodic jobs and does no work itself (run exactly one).

`python -m workers.clock`. Each tick only writes a job into the durable ledger (workers do the
work), so a slow job never delays the schedule, a Redis restart loses no tick, and a missed tick
(clock restarted) is simply sent at the next one. The list of periodic jobs is
`app.services.schedules` (the web process shows it and runs one now); each tick is recorded in
`schedule_runs`.

Every 2 s, while an admin's socket is in the `ops` room, it also sends `ops:snapshot` (the queues
and the workers, `app.services.ops_live`) to that room.
"""

from __future__ import annotations

import functools
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.realtime import Publisher
from app.connection_budget import log_budget
from app.db import create_sync_engine, sync_session_factory
from app.keys import OPS_ROOM
from app.logging import configure_logging, freeze_startup_objects, get_logger
from app.redis_conn import create_sync_redis
from app.services import ops_live, schedules
from app.settings import Settings, get_settings

log = get_logger("clock")

#: How often the clock sends `ops:snapshot` to the `ops` room while someone is in it (s).
OPS_SNAPSHOT_S = 2.0


@functools.lru_cache(maxsize=1)
def _sessions() -> sessionmaker[Session]:
    return sync_session_factory(create_sync_engine(get_settings().db, pool_size=1))


@functools.lru_cache(maxsize=1)
def _publisher() -> Publisher:
    return Publisher(get_settings().redis)


@functools.lru_cache(maxsize=1)
def _broker_redis() -> Any:
    return create_sync_redis(get_settings().redis, decode_responses=False)


def send(actor_name: str, sessions: sessionmaker[Session] | None = None) -> None:
    """Write one job for `actor_name` into the ledger, unless one is still waiting or running (its
    dedupe key), so a farm without workers doesn't pile them up; the tick is recorded in
    `schedule_runs`. A PostgreSQL outage is logged and the job is written at the next tick."""
    try:
        schedule = schedules.find(get_settings(), actor_name)
        with (sessions or _sessions()).begin() as session:
            message_id = schedules.run(session, schedule, trigger=schedules.CLOCK)
        log.info("clock.sent", actor=actor_name, message_id=str(message_id) if message_id else None,
                 already_waiting=message_id is None)
    except Exception as error:
        log.error("clock.send_failed", actor=actor_name, error=repr(error))


def send_ops_snapshot(publisher: Publisher | None = None, sessions: sessionmaker[Session] | None = None,
                      client: Any = None) -> bool:
    """`ops:snapshot` to the `ops` room, if a socket is in it; whether it was sent. Errors are logged."""
    publisher = publisher or _publisher()
    try:
        if not publisher.watched_rooms().has(OPS_ROOM):
            return False
        with (sessions or _sessions())() as session:
            snapshot = ops_live.ops_snapshot(client or _broker_redis(), session, get_settings())
        publisher.emit("ops:snapshot", snapshot, OPS_ROOM)
        return True
    except Exception as error:
        log.warning("clock.ops_snapshot_failed", error=repr(error))
        return False


def build_scheduler(settings: Settings) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                 "misfire_grace_time": 60})
    for schedule in schedules.periodic(settings):
        scheduler.add_job(send, IntervalTrigger(seconds=schedule.every_s), args=[schedule.name],
                          id=schedule.name, name=schedule.name, next_run_time=datetime.now(UTC))
    scheduler.add_job(send_ops_snapshot, IntervalTrigger(seconds=OPS_SNAPSHOT_S), id="ops.snapshot",
                      name="ops.snapshot", misfire_grace_time=1)
    return scheduler


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log, process="clock")
    log_budget("clock", settings)
    scheduler = build_scheduler(settings)
    freeze_startup_objects()

    def stop(signum: int, frame: Any) -> None:
        log.info("clock.stopping", signal=signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for job in scheduler.get_jobs():
        log.info("clock.scheduled", job=job.id, trigger=str(job.trigger))
    scheduler.start()
    sys.exit(0)


if __name__ == "__main__":
    main()
