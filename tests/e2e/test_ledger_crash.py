"""A worker SIGKILLed in the middle of ledger jobs: each job's effect still happens exactly once.

Six jobs are written into the ledger; a real worker process (two threads) takes them; as soon as
one has started, the worker's whole process group is SIGKILLed. The killed runs' transactions
never commit (their ledger rows stay handed); a second worker gets their messages back (Dramatiq's
requeue of a dead worker's messages, or the ledger's lease) and runs them: every effect is in the
database once, and at least one job visibly started twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.keys import JobKind
from app.outbox import add_job
from app.settings import Settings
from models import AuditEntry, Job, JobState
from tests.e2e import probe_jobs

pytestmark = pytest.mark.e2e

MARKERS = [f"crash-{n}" for n in range(6)]
WORKER_ENV = {"WORKER_PROCESSES": "1", "WORKER_THREADS": "2", "WORKER_HEARTBEAT_TIMEOUT": "3",
              "WORKER_MAINTENANCE_INTERVAL": "1", "WORKER_METRICS_PORT": "0", "LEDGER_LEASE": "5",
              "LEDGER_LEASE_CHECK_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def db(database: str, redis_prefix_cleanup: None) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(database)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers.run", "tests.e2e.probe_jobs", "--queues",
                             probe_jobs.QUEUE], env={**os.environ, **WORKER_ENV}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)  # the session we created for it: the worker and its forks
        except ProcessLookupError:
            return
        process.wait(timeout=40)


def effects(db: sessionmaker[Session], marker: str) -> int:
    with db() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "probe.ledger", AuditEntry.target_id == marker)) or 0)


def states(db: sessionmaker[Session]) -> list[str]:
    with db() as session:
        return list(session.scalars(select(Job.state).where(Job.actor == "probe.ledger_effect")))


def test_jobs_of_a_sigkilled_worker_act_exactly_once(db: sessionmaker[Session], settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    # Given six ledger jobs of two seconds each
    with db.begin() as session:
        for marker in MARKERS:
            add_job(session, JobKind("probe.ledger_effect", probe_jobs.QUEUE), marker, 2.0)
    first = start_worker()
    second: subprocess.Popen[bytes] | None = None
    try:
        # When the worker is SIGKILLed as soon as one job has started
        deadline = time.monotonic() + 30
        while not client.hgetall(probe_jobs.ledger_runs_key()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.hgetall(probe_jobs.ledger_runs_key()), "no job started"
        stop(first, signal.SIGKILL)
        killed_mid_job = {m for m, n in client.hgetall(probe_jobs.ledger_runs_key()).items()
                          if int(n) and effects(db, m) == 0}
        assert killed_mid_job, "the kill fell between jobs"
        # And another worker starts
        second = start_worker()
        # Then every job is done, each effect written once, and the killed ones ran again
        deadline = time.monotonic() + 90
        while states(db) != [JobState.DONE] * len(MARKERS) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert states(db) == [JobState.DONE] * len(MARKERS)
        assert {m: effects(db, m) for m in MARKERS} == dict.fromkeys(MARKERS, 1)
        runs = client.hgetall(probe_jobs.ledger_runs_key())
        assert all(int(runs[m]) >= 2 for m in killed_mid_job)
    finally:
        stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
        client.close()
