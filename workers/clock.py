"""The `clock` process: APScheduler sends periodic jobs and does no work itself (run exactly one).

`python -m workers.clock`. Each tick only writes a job into the durable ledger (workers do the
work), so a slow job never delays the schedule, a Redis restart loses no tick, and a missed tick
(clock restarted) is simply sent at the next one.
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

from app.connection_budget import log_budget
from app.db import create_sync_engine, sync_session_factory
from app.keys import (
    DRIVERS_PRUNE_STALE,
    NOTIFICATIONS_RECONCILE,
    RETENTION_PRUNE,
    RIDES_RECONCILE,
    TOKENS_CLEANUP,
    JobKind,
)
from app.logging import configure_logging, freeze_startup_objects, get_logger
from app.outbox import add_job
from app.settings import Settings, get_settings

log = get_logger("clock")


@functools.lru_cache(maxsize=1)
def _sessions() -> sessionmaker[Session]:
    return sync_session_factory(create_sync_engine(get_settings().db, pool_size=1))


def send(actor_name: str, sessions: sessionmaker[Session] | None = None) -> None:
    """Write one job for `actor_name` into the ledger, unless one is still waiting or running (its
    dedupe key), so a farm without workers doesn't pile them up. A PostgreSQL outage is logged and
    the job is written at the next tick."""
    import jobs

    try:
        queue = jobs.broker.get_actor(actor_name).queue_name
        with (sessions or _sessions()).begin() as session:
            message_id = add_job(session, JobKind(actor_name, queue), dedupe_key=f"clock:{actor_name}")
        log.info("clock.sent", actor=actor_name, message_id=str(message_id))
    except Exception as error:
        log.error("clock.send_failed", actor=actor_name, error=repr(error))


def build_scheduler(settings: Settings) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                                 "misfire_grace_time": 60})
    periodic = (
        (TOKENS_CLEANUP, settings.clock.tokens_cleanup_interval_s),
        (RIDES_RECONCILE, settings.clock.reconcile_interval_s),
        (NOTIFICATIONS_RECONCILE, settings.clock.reconcile_interval_s),
        (DRIVERS_PRUNE_STALE, settings.clock.driver_prune_interval_s),
        (RETENTION_PRUNE, settings.clock.retention_interval_s),
    )
    for kind, interval_s in periodic:
        scheduler.add_job(send, IntervalTrigger(seconds=interval_s), args=[kind.actor], id=kind.actor,
                          name=kind.actor, next_run_time=datetime.now(UTC))
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
