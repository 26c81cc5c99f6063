"""`/api/v1/admin/queues`: every queue's figures, and pausing and resuming a queue (real PostgreSQL and
Redis, a real worker for the throughput)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from app.keys import QUEUE_MAINTENANCE, QUEUES
from jobs.base import JobContext, job
from models import AuditEntry
from models.ops import QueuePause
from tests.integration.conftest import Accounts, Client, bearer, error_code, own_session
from tests.integration.test_admin_access import refused_as_read_only
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    DEADLINE_S,
    WorkerFactory,
    db_fixture,
    start_worker_fixture,
)

ITEM_KEYS = {"queue", "ready", "delayed", "inFlight", "dead", "failed", "inLedger", "oldestAgeS", "paused",
             "pausedAt", "pausedBy", "pauseReason", "throughput", "failures", "failureRate"}


@job("test.admin_queues.works", queue=QUEUE_MAINTENANCE, max_retries=0)
def works(ctx: JobContext) -> None:
    pass


@job("test.admin_queues.fails", queue=QUEUE_MAINTENANCE, max_retries=0)
def fails(ctx: JobContext) -> None:
    raise RuntimeError("boom")


async def eventually(check: Callable[[], Awaitable[Any]], *, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def queue_audit(action: str) -> list[AuditEntry]:
    async with own_session() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                          .order_by(AuditEntry.id)))


async def test_an_admin_sees_every_queue_in_the_contract_shape(api: Client, accounts: Accounts) -> None:
    # Given an admin and an idle farm
    admin = await accounts.admin()

    # When it lists the queues
    response = await api.get("/api/v1/admin/queues", headers=bearer(admin["accessToken"]))

    # Then every farm queue is there, idle, not paused, with an hour of empty minutes
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "workersAlive", "at"}
    assert body["workersAlive"] == 0 and body["at"].endswith("Z")
    assert [item["queue"] for item in body["items"]] == list(QUEUES)
    for item in body["items"]:
        assert set(item) == ITEM_KEYS
        assert item["paused"] is False and item["pausedAt"] is None and item["pausedBy"] is None
        assert item["throughput"] == [0] * 60 and item["failures"] == [0] * 60
        assert item["failureRate"] == 0.0 and item["ready"] == item["failed"] == 0


async def test_pause_and_resume_are_idempotent_audited_and_shown(api: Client, accounts: Accounts) -> None:
    # Given an admin
    admin = await accounts.admin()
    token = bearer(admin["accessToken"])
    email = admin["user"]["email"]

    # When it pauses `payments` with a reason, then pauses it again
    first = await api.post("/api/v1/admin/queues/payments/pause", json={"reason": "Stripe incident"},
                           headers=token)
    again = await api.post("/api/v1/admin/queues/payments/pause", json={}, headers=token)

    # Then the queue item says paused, by whom and why; the second pause changed nothing
    assert first.status_code == 200, first.text
    item = first.json()
    assert set(item) == ITEM_KEYS
    assert item["queue"] == "payments" and item["paused"] is True
    assert item["pausedBy"] == email and item["pauseReason"] == "Stripe incident"
    assert item["pausedAt"].endswith("Z")
    assert again.status_code == 200 and again.json()["pausedAt"] == item["pausedAt"]
    assert again.json()["pauseReason"] == "Stripe incident"
    # And the list shows it, the other queues untouched
    listed = (await api.get("/api/v1/admin/queues", headers=token)).json()["items"]
    assert [q["queue"] for q in listed if q["paused"]] == ["payments"]
    # And each call is in the audit log under the admin
    paused = await queue_audit("queue.paused")
    assert [(e.target_type, e.target_id, e.operator, e.actor_id) for e in paused] == [
        ("queue", "payments", email, paused[0].actor_id)] * 2
    assert str(paused[0].actor_id) == admin["user"]["id"]
    assert paused[0].details == {"reason": "Stripe incident", "alreadyPaused": False}
    assert paused[1].details["alreadyPaused"] is True

    # When it resumes it, twice (no body)
    resumed = await api.post("/api/v1/admin/queues/payments/resume", headers=token)
    twice = await api.post("/api/v1/admin/queues/payments/resume", headers=token)

    # Then the queue is running again, the row gone, both calls audited
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False and resumed.json()["pausedBy"] is None
    assert twice.status_code == 200 and twice.json()["paused"] is False
    async with own_session() as session:
        assert list(await session.scalars(select(QueuePause))) == []
    resumes = await queue_audit("queue.resumed")
    assert [e.details["wasPaused"] for e in resumes] == [True, False]
    assert resumes[0].details["pausedBy"] == email


async def test_a_pause_needs_no_body_and_refuses_unknown_fields(api: Client, accounts: Accounts) -> None:
    admin = await accounts.admin()
    token = bearer(admin["accessToken"])
    refused = await api.post("/api/v1/admin/queues/dispatch/pause", json={"why": "x"}, headers=token)
    assert refused.status_code == 400 and error_code(refused) == "VALIDATION_ERROR", refused.text
    bare = await api.post("/api/v1/admin/queues/dispatch/pause", headers=token)
    assert bare.status_code == 200, bare.text
    assert bare.json()["paused"] is True and bare.json()["pauseReason"] is None


async def test_an_unknown_queue_is_not_found(api: Client, accounts: Accounts) -> None:
    admin = await accounts.admin()
    token = bearer(admin["accessToken"])
    for action in ("pause", "resume"):
        response = await api.post(f"/api/v1/admin/queues/nope/{action}", json={}, headers=token)
        assert response.status_code == 404, response.text
        assert error_code(response) == "NOT_FOUND"
    assert await queue_audit("queue.paused") == []


async def test_who_may_read_and_who_may_pause(api: Client, accounts: Accounts) -> None:
    # Given a read-only admin, a customer and a driver
    support = await accounts.admin(read_only=True)
    customer = await accounts.register("customer")
    driver = await accounts.register("driver")

    # Then the read-only admin reads the queues, and may neither pause nor resume
    assert (await api.get("/api/v1/admin/queues", headers=bearer(support["accessToken"]))).status_code == 200
    for action in ("pause", "resume"):
        refused = await api.post(f"/api/v1/admin/queues/dispatch/{action}", json={},
                                 headers=bearer(support["accessToken"]))
        assert refused_as_read_only(refused), refused.text
    # And customers and drivers see nothing
    for who in (customer, driver):
        for method, path in (("GET", "/api/v1/admin/queues"),
                             ("POST", "/api/v1/admin/queues/dispatch/pause")):
            response = await api.request(method, path, headers=bearer(who["accessToken"]))
            assert response.status_code == 403 and error_code(response) == "FORBIDDEN", response.text
    # And nobody without a token
    assert (await api.get("/api/v1/admin/queues")).status_code == 401
    async with own_session() as session:
        assert list(await session.scalars(select(QueuePause))) == []


async def test_the_last_hour_counts_the_jobs_a_worker_ran(
        api: Client, accounts: Accounts, start_worker: WorkerFactory) -> None:
    # Given a worker that ran three maintenance jobs, one of which failed
    admin = await accounts.admin()
    token = bearer(admin["accessToken"])
    start_worker()
    works.send()
    works.send()
    fails.send()

    async def maintenance() -> dict[str, Any] | None:
        items = (await api.get("/api/v1/admin/queues", headers=token)).json()["items"]
        item: dict[str, Any] = next(q for q in items if q["queue"] == QUEUE_MAINTENANCE)
        return item if sum(item["throughput"]) >= 3 and item["failed"] >= 1 else None

    # When the admin lists the queues
    item = await eventually(maintenance, what="three runs counted")

    # Then this minute counts three runs and one failure, the registry the failed job
    assert sum(item["throughput"]) == 3 and sum(item["failures"]) == 1
    assert item["throughput"][-1] + item["throughput"][-2] == 3  # this minute (or the one before)
    assert item["failureRate"] == round(1 / 3, 4)
    assert item["failed"] == 1
    body = (await api.get("/api/v1/admin/queues", headers=token)).json()
    assert body["workersAlive"] == 1
    assert all(sum(q["throughput"]) == 0 for q in body["items"] if q["queue"] != QUEUE_MAINTENANCE)
