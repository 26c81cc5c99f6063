"""`farmctl queues`: what Dramatiq's Redis broker holds per queue, the registry's failures, live workers.

The figures are checked against known traffic and against Redis itself: a real worker runs (its
heartbeat) and fails a real job (a dead letter and a registry row); an idle queue no worker
consumes holds ready, delayed and fetched-but-unacked messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import dramatiq
import pytest
import redis
import structlog
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.keys import JobKind
from app.settings import Settings
from jobs.base import JobContext, job
from scripts.farmctl import main
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    broker_redis_fixture,
    db_fixture,
    drain,
    failed_jobs,
    start_worker_fixture,
    wait_for,
)

QUEUE = "test-farmctl-queues"
#: Never declared on the broker, so no worker consumes it: its messages stay where they are put.
IDLE = "test-farmctl-idle"


@job("test.farmctl.always_fails", queue=QUEUE, max_retries=0)
def always_fails(ctx: JobContext) -> None:
    raise RuntimeError("nope")


def idle_message(age_s: float = 0.0) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=IDLE, actor_name="test.farmctl.idle", args=(), kwargs={}, options={},
                            message_timestamp=int((time.time() - age_s) * 1000))


def farmctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    with structlog.testing.capture_logs():
        code = main(list(argv), configure_logs=False)
    return code, capsys.readouterr().out


def test_queues_shows_what_redis_and_the_registry_hold(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a live worker that failed one job (dead-lettered in Redis, recorded in the registry)
    start_worker()
    message = always_fails.send()
    wait_for(lambda: failed_jobs(db, message.message_id), what="the failure record")
    drain(QUEUE)
    # And an idle queue with 3 messages sent (10 s ago, 5 s ago, now), 2 delayed, and the oldest
    # fetched by a consumer that hasn't acked it
    for age in (10.0, 5.0, 0.0):
        jobs.broker.enqueue(idle_message(age))
    for _ in range(2):
        jobs.broker.enqueue(idle_message(), delay=60_000)
    consumer = jobs.broker.consume(IDLE, prefetch=1, timeout=1000)
    fetched = next(consumer)
    assert fetched is not None

    # When the admin looks at the queues
    code, out = farmctl(capsys, "queues", "--queue", QUEUE, "--queue", IDLE, "--json")

    # Then each figure is what was done, and what Redis holds
    assert code == 0
    report = json.loads(out)
    failing, idle = report["queues"]
    assert {k: failing[k] for k in ("queue", "ready", "delayed", "inFlight", "dead", "failed")} == {
        "queue": QUEUE, "ready": 0, "delayed": 0, "inFlight": 0, "dead": 1, "failed": 1}
    assert {k: idle[k] for k in ("queue", "ready", "delayed", "inFlight", "dead", "failed")} == {
        "queue": IDLE, "ready": 2, "delayed": 2, "inFlight": 1, "dead": 0, "failed": 0}
    assert 4.0 <= idle["oldestReadyAgeS"] < 8.0  # the 5 s old one: the 10 s old one is in flight
    ns = settings.redis.dramatiq_namespace
    assert idle["ready"] == broker_redis.llen(f"{ns}:{IDLE}")
    assert idle["ready"] + idle["inFlight"] == broker_redis.hlen(f"{ns}:{IDLE}.msgs")
    assert idle["delayed"] == broker_redis.hlen(f"{ns}:{IDLE}.DQ.msgs")
    assert failing["dead"] == broker_redis.zcard(f"{ns}:{QUEUE}.XQ")
    # And the worker is alive by its heartbeat, with where it runs and what it serves
    beats = broker_redis.zrange(f"{ns}:__heartbeats__", 0, -1)
    assert report["liveWorkers"] == len(beats) == 1
    [worker] = report["workers"]
    assert worker["alive"] and worker["pid"] == os.getpid() and QUEUE in worker["queues"]

    # And the table says the same
    code, out = farmctl(capsys, "queues", "--queue", QUEUE, "--queue", IDLE)
    header, first, second, *rest = out.splitlines()
    assert header.split() == ["QUEUE", "READY", "DELAYED", "IN", "FLIGHT", "DEAD", "(REDIS)", "FAILED",
                              "(REGISTRY)", "OLDEST", "READY", "PAUSED"]
    assert first.split() == [QUEUE, "0", "0", "0", "1", "1", "-", "-"]
    assert second.split()[:6] == [IDLE, "2", "2", "1", "0", "0"]
    assert second.split()[6].endswith("s") and second.split()[7] == "-"
    assert "workers alive: 1" in rest
    assert any(line.strip().startswith(f"{worker['host']}:{os.getpid()}") for line in rest)
    consumer.close()


def test_queues_watch_refreshes_until_interrupted(clean: None) -> None:
    # Given `farmctl queues --watch` running as a process, its output not a terminal
    argv = [sys.executable, "-m", "scripts.farmctl", "queues", "--watch", "0.2", "--json"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ))
    try:
        # When it has printed two snapshots and is interrupted (Ctrl-C)
        assert process.stdout is not None
        snapshots = [json.loads(process.stdout.readline()) for _ in range(2)]
        os.kill(process.pid, signal.SIGINT)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Then each snapshot covers the farm's queues (registry included), and it ends cleanly
    assert all(q["failed"] == 0 for q in snapshots[0]["queues"])
    assert [q["queue"] for q in snapshots[0]["queues"]] == ["dispatch", "payments", "notifications",
                                                            "maintenance"]
    assert snapshots[1]["at"] > snapshots[0]["at"]
    assert code == 0


def test_queues_shows_what_the_job_ledger_holds(
    clean: None, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str],
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app.outbox import add_job
    from models import Job

    # Given, on a queue no relay serves: two jobs due now (one due for a minute: overdue), one due
    # in an hour, one handed over and past its lease, and one done
    now = datetime.now(UTC)
    with db.begin() as session:
        add_job(session, JobKind("test.farmctl.idle", IDLE), "due")
        add_job(session, JobKind("test.farmctl.idle", IDLE), "late", due_at=now - timedelta(minutes=1))
        add_job(session, JobKind("test.farmctl.idle", IDLE), "later", delay_ms=3_600_000)
        handed = add_job(session, JobKind("test.farmctl.idle", IDLE), "handed")
        done = add_job(session, JobKind("test.farmctl.idle", IDLE), "done")
        session.execute(update(Job).where(Job.message_id == handed)
                        .values(state="handed", lease_until=now - timedelta(seconds=1)))
        session.execute(update(Job).where(Job.message_id == done).values(state="done"))

    # When the admin looks at the queues
    code, out = farmctl(capsys, "queues", "--queue", IDLE, "--json")

    # Then the ledger's figures are those rows
    assert code == 0
    [idle] = json.loads(out)["queues"]
    ledger = idle["ledger"]
    assert {k: ledger[k] for k in ("due", "later", "handed", "overdue")} == {
        "due": 2, "later": 1, "handed": 1, "overdue": 2}
    assert 59 <= ledger["oldestDueS"] < 120
    # And the table shows them too
    code, out = farmctl(capsys, "queues", "--queue", IDLE)
    row = next(line for line in out.splitlines()[3:] if line.split()[:1] == [IDLE])
    assert row.split() == [IDLE, "2", "1", "1", "2"]


def test_queues_pause_and_resume_are_audited_and_shown(
    clean: None, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str],
) -> None:
    from sqlalchemy import select

    from models import AuditEntry
    from models.ops import QueuePause

    # When an operator pauses `payments` with a reason
    code, out = farmctl(capsys, "queues", "pause", "payments", "--reason", "Stripe incident", "--by", "alice")

    # Then it is paused, by alice, and the audit log says so
    assert code == 0, out
    assert out.startswith("payments: paused by alice since ")
    with db() as session:
        [row] = session.scalars(select(QueuePause)).all()
        assert (row.queue, row.paused_by, row.reason) == ("payments", "alice", "Stripe incident")
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "queue.paused")).all()
        assert (entry.actor_role, entry.operator, entry.target_type, entry.target_id) == (
            "cli", "alice", "queue", "payments")
        assert entry.details == {"reason": "Stripe incident", "alreadyPaused": False}

    # And `farmctl queues` shows it, in the table and in JSON
    code, out = farmctl(capsys, "queues", "--json")
    assert code == 0
    paused = {q["queue"]: q["paused"] for q in json.loads(out)["queues"]}
    assert paused == {"dispatch": False, "payments": True, "notifications": False, "maintenance": False}
    payments = next(q for q in json.loads(out)["queues"] if q["queue"] == "payments")
    assert payments["pausedBy"] == "alice" and payments["pauseReason"] == "Stripe incident"
    code, out = farmctl(capsys, "queues")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:5]}
    assert rows["payments"][-1] == "PAUSED" and rows["dispatch"][-1] == "-"
    assert "  payments paused by alice since " in out and out.count("Stripe incident") == 1

    # When it is resumed (twice: the second changes nothing)
    code, out = farmctl(capsys, "queues", "resume", "payments", "--by", "alice")
    assert code == 0 and out.strip() == "payments: resumed"
    code, out = farmctl(capsys, "queues", "resume", "payments")
    assert code == 0 and "was not paused" in out

    # Then no queue is paused, and both resumes are audited
    code, out = farmctl(capsys, "queues", "--json")
    assert not any(q["paused"] for q in json.loads(out)["queues"])
    with db() as session:
        assert session.scalars(select(QueuePause)).all() == []
        resumed = session.scalars(select(AuditEntry).where(AuditEntry.action == "queue.resumed")
                                  .order_by(AuditEntry.id)).all()
        assert [e.details["wasPaused"] for e in resumed] == [True, False]


def test_queues_pause_refuses_an_unknown_queue(clean: None, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["queues", "pause", "nope"], configure_logs=False)
    assert code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
