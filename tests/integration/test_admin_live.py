"""The operations console's workers and schedules (`app/api/controllers/admin_live.py`), and the
clock's `ops:snapshot`: a real Dramatiq worker in this process, the autoscaler's supervisor with
stand-in processes, the clock's own functions, on the run's real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.queue_stats import BrokerSnapshot, QueueStats
from app.adapters.realtime import Publisher
from app.adapters.worker_registry import DecisionLog
from app.keys import RedisKeys
from app.settings import Settings
from jobs.base import JobContext, job
from models import AuditEntry, Job
from models.ops import ScheduleRun
from tests.integration.conftest import Accounts, Client, bearer, error_code
from tests.integration.test_live_map import Listener
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    db_fixture,
    start_worker_fixture,
)
from workers import autoscale, clock

WORKERS = "/api/v1/admin/workers"
SCHEDULES = "/api/v1/admin/schedules"
PERIODIC = ["tokens.cleanup", "rides.reconcile", "notifications.reconcile", "drivers.prune_stale",
            "retention.prune"]
DEADLINE_S = 30.0

gate = threading.Event()


@job("test.live_waits", queue="test-live", max_retries=0)
def waits(ctx: JobContext) -> None:
    assert gate.wait(DEADLINE_S)


async def poll(read: Callable[[], Any], done: Callable[[Any], bool], *, what: str) -> Any:
    async with asyncio.timeout(DEADLINE_S):
        while True:
            value = await read()
            if done(value):
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover


def ours(body: dict[str, Any], worker: Any) -> dict[str, Any] | None:
    broker_id = worker.broker.broker_id
    return next((item for item in body["items"] if item["id"] == broker_id), None)


# --- workers ---------------------------------------------------------------------------------------
async def test_a_live_worker_is_listed_with_the_jobs_it_is_running(
    api: Client, accounts: Accounts, start_worker: WorkerFactory
) -> None:
    # Given a running worker process (two threads) and an admin
    import os

    admin = bearer((await accounts.admin())["accessToken"])
    worker = start_worker(threads=2)

    async def read() -> dict[str, Any]:
        response = await api.get(WORKERS, headers=admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # When it is idle, then it is listed: alive, its host, pid, queues and threads, nothing running
    body = await poll(read, lambda b: ours(b, worker) is not None, what="the worker to be listed")
    item = ours(body, worker)
    assert item is not None
    assert (item["pid"], item["threads"], item["alive"], item["inProgress"]) == (os.getpid(), 2, True, 0)
    assert "test-live" in item["queues"] and item["host"]
    assert item["lastBeatAgeS"] < 10 and item["startedAt"].endswith("Z")
    assert set(body) == {"items", "autoscaler", "at"}

    # When it runs a job that waits
    try:
        waits.send()
        # Then the job is counted in progress
        await poll(read, lambda b: (ours(b, worker) or {}).get("inProgress") == 1, what="one job in progress")
    finally:
        gate.set()
    # And once it finished, nothing is
    await poll(read, lambda b: (ours(b, worker) or {}).get("inProgress") == 0, what="no job in progress")
    gate.clear()


class StandInProcess:
    """What `subprocess.Popen` gives the supervisor, for a worker that never really starts."""

    pids = iter(range(40_000, 50_000))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pid = next(self.pids)
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return None

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


class DeepQueue:
    queues = ("dispatch",)

    def snapshot(self) -> BrokerSnapshot:
        stats = QueueStats(queue="dispatch", ready=10_000, in_flight=0, delayed=0, dead=0,
                           oldest_ready_age_s=99)
        return BrokerSnapshot(queues=[stats], workers=[], taken_at=0.0)


async def test_the_autoscalers_decisions_are_listed_newest_first(
    api: Client, accounts: Accounts, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the autoscaler's supervisor of the dispatch pool (1 to 3 workers) logging its decisions
    monkeypatch.setattr(autoscale.subprocess, "Popen", StandInProcess)
    scale = dataclasses.replace(settings.autoscale, min_workers=1, max_workers=3)
    client = redis.Redis.from_url(settings.redis.url)
    decisions = DecisionLog(client, RedisKeys(settings.redis).autoscale_decisions())
    supervisor = autoscale.Supervisor(dataclasses.replace(settings, autoscale=scale), [], DeepQueue(),  # type: ignore[arg-type]
                                      "/tmp", decisions=decisions)
    try:
        # When it starts its minimum, scales up for a deep queue, then shuts down
        supervisor.begin()
        supervisor.tick()
        supervisor.stop_all()
    finally:
        client.close()

    # Then an admin sees each decision, newest first, with the counts before and after
    admin = bearer((await accounts.admin())["accessToken"])
    response = await api.get(WORKERS, headers=admin)
    assert response.status_code == 200, response.text
    listed = [(d["queue"], d["action"], d["from"], d["to"], d["reason"])
              for d in response.json()["autoscaler"]]
    assert listed == [("dispatch", "remove", 1, 0, "shutdown"), ("dispatch", "remove", 2, 1, "shutdown"),
                      ("dispatch", "add", 1, 2, "oldest_ready_age+ready_per_worker"),
                      ("dispatch", "add", 0, 1, "minimum")]
    assert all(d["at"].endswith("Z") for d in response.json()["autoscaler"])


def test_the_decision_log_keeps_the_last_200(settings: Settings, clean: None) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        log = DecisionLog(client, RedisKeys(settings.redis).autoscale_decisions())
        for n in range(210):
            log.record(pool="dispatch", action="add", before=n, after=n + 1, reason="minimum")
        assert client.llen(log.key) == 200
        latest = log.latest()
        assert len(latest) == 50 and latest[0]["from"] == 209
    finally:
        client.close()


# --- schedules -------------------------------------------------------------------------------------
async def schedules_by_name(api: Client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await api.get(SCHEDULES, headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


async def test_the_schedules_list_the_clocks_jobs_and_their_last_runs(
    api: Client, accounts: Accounts, settings: Settings, db: sessionmaker[Session]
) -> None:
    admin = bearer((await accounts.admin())["accessToken"])
    # Given a clock that has not run yet: every periodic job, never run
    before = await schedules_by_name(api, admin)
    assert list(before) == PERIODIC
    assert before["tokens.cleanup"] == {
        "name": "tokens.cleanup", "queue": "maintenance", "everyS": settings.clock.tokens_cleanup_interval_s,
        "lastRunAt": None, "lastTrigger": None, "lastBy": None, "nextRunAt": None, "runs": 0}

    # When the clock ticks for tokens.cleanup
    clock.send("tokens.cleanup", sessions=db)

    # Then its run is listed, with the next one an interval later
    item = (await schedules_by_name(api, admin))["tokens.cleanup"]
    assert (item["lastTrigger"], item["lastBy"], item["runs"]) == ("clock", None, 1)
    last = datetime.fromisoformat(item["lastRunAt"])
    assert datetime.fromisoformat(item["nextRunAt"]) - last == timedelta(
        seconds=settings.clock.tokens_cleanup_interval_s)


async def test_run_now_writes_the_job_once_audited_and_then_says_one_is_waiting(
    api: Client, accounts: Accounts, db: sessionmaker[Session]
) -> None:
    # Given an admin and no worker running
    session = await accounts.admin()
    admin = bearer(session["accessToken"])
    email = session["user"]["email"]

    # When it runs retention.prune now
    first = await api.post(f"{SCHEDULES}/retention.prune/run", headers=admin)

    # Then the job is written with the clock's dedupe key
    assert first.status_code == 202, first.text
    body = first.json()
    assert (body["name"], body["queued"]) == ("retention.prune", True)
    assert set(body) == {"name", "queued", "jobId"}
    with db() as s:
        rows = s.execute(select(Job.message_id, Job.actor, Job.queue).where(
            Job.dedupe_key == "clock:retention.prune")).all()
        assert [(str(m), a, q) for m, a, q in rows] == [(body["jobId"], "retention.prune", "maintenance")]

    # When it asks again while that job is still waiting
    again = await api.post(f"{SCHEDULES}/retention.prune/run", headers=admin)

    # Then nothing more is written
    assert again.status_code == 200, again.text
    assert again.json() == {"name": "retention.prune", "queued": False, "reason": "already waiting"}
    with db() as s:
        assert len(s.execute(select(Job.id).where(Job.dedupe_key == "clock:retention.prune")).all()) == 1
        run = s.get_one(ScheduleRun, "retention.prune")
        assert (run.last_trigger, run.last_by, str(run.last_job_id), run.runs) == (
            "manual", email, body["jobId"], 1)
        audits = s.scalars(select(AuditEntry).where(AuditEntry.action == "schedule.run_now")
                           .order_by(AuditEntry.id)).all()
        assert [(a.operator, a.target_type, a.target_id, a.details["queued"]) for a in audits] == [
            (email, "schedule", "retention.prune", True), (email, "schedule", "retention.prune", False)]
    # And the list says who ran it
    item = (await schedules_by_name(api, admin))["retention.prune"]
    assert (item["lastTrigger"], item["lastBy"], item["runs"]) == ("manual", email, 1)
    assert item["nextRunAt"] is None

    # And the clock's next tick does not double it either
    clock.send("retention.prune", sessions=db)
    with db() as s:
        assert len(s.execute(select(Job.id).where(Job.dedupe_key == "clock:retention.prune")).all()) == 1


async def test_an_unknown_schedule_is_not_found(api: Client, accounts: Accounts) -> None:
    admin = bearer((await accounts.admin())["accessToken"])
    response = await api.post(f"{SCHEDULES}/no.such_job/run", headers=admin)
    assert response.status_code == 404 and error_code(response) == "NOT_FOUND", response.text


# --- who may ---------------------------------------------------------------------------------------
async def test_a_read_only_admin_reads_and_may_not_run_a_schedule_and_a_customer_reads_nothing(
    api: Client, accounts: Accounts, db: sessionmaker[Session]
) -> None:
    support = bearer((await accounts.admin(read_only=True))["accessToken"])
    customer = bearer((await accounts.register("customer"))["accessToken"])
    reads = [WORKERS, SCHEDULES]

    assert [(await api.get(path, headers=support)).status_code for path in reads] == [200, 200]
    refused = await api.post(f"{SCHEDULES}/tokens.cleanup/run", headers=support)
    assert refused.status_code == 403 and refused.json()["error"]["details"] == {"reason": "READ_ONLY_ADMIN"}
    with db() as s:
        assert s.execute(select(Job.id).where(Job.dedupe_key == "clock:tokens.cleanup")).all() == []

    for response in [*(await asyncio.gather(*(api.get(p, headers=customer) for p in reads))),
                     await api.post(f"{SCHEDULES}/tokens.cleanup/run", headers=customer)]:
        assert response.status_code == 403 and error_code(response) == "FORBIDDEN", response.text
    assert (await api.get(WORKERS)).status_code == 401


# --- ops:snapshot ----------------------------------------------------------------------------------
async def test_the_clock_sends_the_ops_snapshot_to_watching_admins_only(
    web: str, accounts: Accounts, settings: Settings, db: sessionmaker[Session]
) -> None:
    publisher = Publisher(settings.redis)
    client = redis.Redis.from_url(settings.redis.url)
    watcher, other = Listener(), Listener()
    try:
        # Given nobody watches the farm: the clock sends nothing
        assert clock.send_ops_snapshot(publisher, db, client) is False

        # When an admin subscribes to ops (and another admin does not)
        from tests.integration.market_support import Person

        for listener in (watcher, other):
            session = await accounts.admin()
            await listener.connect(web, Person(session["user"]["id"], session["accessToken"], "admin"))
        assert await watcher.call("subscribe:ops") == {"ok": True}
        publisher.watched.invalidate()

        # Then the clock's next snapshot reaches it: the queues and the workers
        assert await asyncio.to_thread(clock.send_ops_snapshot, publisher, db, client) is True
        snapshot = await watcher.until("ops:snapshot")
        assert set(snapshot) == {"queues", "workers", "at"}
        assert [q["queue"] for q in snapshot["queues"]["items"]] == [
            "dispatch", "payments", "notifications", "maintenance"]
        assert set(snapshot["queues"]["items"][0]) >= {
            "queue", "ready", "delayed", "inFlight", "dead", "failed", "inLedger", "oldestAgeS", "paused",
            "pausedAt", "pausedBy", "pauseReason", "throughput", "failures", "failureRate"}
        assert set(snapshot["queues"]) == {"items", "workersAlive", "at"}
        assert set(snapshot["workers"]) == {"items", "autoscaler", "at"}
        assert other.events == []
    finally:
        for listener in (watcher, other):
            if listener.client.connected:
                await listener.client.disconnect()
        publisher.close()
        client.close()
