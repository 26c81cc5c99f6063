"""Test-only actors on their own `probe` queue, loaded into real workers as an extra module:
`python -m workers.run tests.e2e.probe_jobs` (or `python -m workers.autoscale tests.e2e.probe_jobs
--queues probe`). Each run is recorded in Redis under the test run's prefix, so a test can count
how many times every job ran and in which worker process.
"""

from __future__ import annotations

import os
import time
from functools import cache

import dramatiq
import redis

import jobs  # noqa: F401  (the farm's broker, before any actor is declared)
from app.redis_conn import create_sync_redis
from app.settings import get_settings
from jobs.base import JobContext, job
from models import AuditEntry

QUEUE = "probe"


@cache
def _redis() -> redis.Redis:
    return create_sync_redis(get_settings().redis)


def runs_key() -> str:
    """Hash: job number → how many times it ran."""
    return get_settings().redis.key("probe", "runs")


def pids_key() -> str:
    """Set: the PIDs of the worker processes that ran a job."""
    return get_settings().redis.key("probe", "pids")


@dramatiq.actor(actor_name="probe.sleep", queue_name=QUEUE, max_retries=0, time_limit=60_000)
def sleep(job: int, seconds: float) -> None:
    """Sleeps, then records that `job` ran once more (in this process)."""
    time.sleep(seconds)
    pipe = _redis().pipeline(transaction=False)
    pipe.hincrby(runs_key(), str(job), 1)
    pipe.sadd(pids_key(), os.getpid())
    pipe.execute()


@dramatiq.actor(actor_name="probe.explode", queue_name=QUEUE, max_retries=1, min_backoff=10, max_backoff=10)
def explode() -> None:
    """Always fails: one run, one retry, then dead-lettered."""
    raise RuntimeError("probe exploded")


def ledger_runs_key() -> str:
    """Hash: marker → how many times `probe.ledger_effect` started for it (kept when a run dies)."""
    return get_settings().redis.key("probe", "ledger-runs")


@job("probe.ledger_effect", queue=QUEUE, max_retries=3, min_backoff_ms=100, max_backoff_ms=200)
def ledger_effect(ctx: JobContext, marker: str, seconds: float) -> None:
    """Counts its start in Redis, writes its effect (an audit row) in its transaction, then sleeps:
    a worker killed meanwhile leaves a start without an effect."""
    _redis().hincrby(ledger_runs_key(), marker, 1)
    ctx.uow.session.add(AuditEntry(actor_role="system", action="probe.ledger", target_id=marker))
    time.sleep(seconds)
