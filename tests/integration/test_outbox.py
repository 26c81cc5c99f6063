"""The transactional outbox and its relay, end to end on the run's PostgreSQL and Redis.

A job written with `app.outbox.add_job` in a transaction reaches Redis only if that transaction
commits, is relayed within moments (woken by NOTIFY, not by the poll), and survives Redis being
unreachable at relay time.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from app.outbox import add_job
from app.settings import Settings
from jobs.base import JobContext, job
from models import OutboxMessage
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    Runs,
    WorkerFactory,
    count,
    db_fixture,
    start_worker_fixture,
    wait_for,
)
from workers.broker import build_broker
from workers.middleware import OutboxRelayMiddleware
from workers.relay import OutboxRelay

QUEUE = "test-outbox"
ACTOR = "test.outbox_record"
runs = Runs()


@job(ACTOR, queue=QUEUE, max_retries=0)
def outbox_record(ctx: JobContext, marker: str, *, note: str = "") -> None:
    runs.record(marker, {"message_id": ctx.message_id, "note": note, "at": time.time()})


@pytest.fixture(autouse=True)
def _fresh_runs() -> None:
    runs.clear()


def relay_settings(settings: Settings, *, poll_s: float = 30.0, batch: int | None = None) -> Settings:
    """Settings whose relay only polls every `poll_s` (so only NOTIFY can make it quick)."""
    worker = dataclasses.replace(settings.worker, relay_poll_interval_s=poll_s,
                                 relay_batch_size=batch or settings.worker.relay_batch_size)
    return dataclasses.replace(settings, worker=worker)


def commit_job(db: sessionmaker[Session], marker: str, **options: Any) -> uuid.UUID:
    with db.begin() as session:
        return add_job(session, ACTOR, QUEUE, marker, **options)


def outbox_rows(db: sessionmaker[Session]) -> int:
    return count(db, OutboxMessage)


def test_a_committed_job_is_relayed_and_runs(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker with its outbox relay
    start_worker(relay=relay_settings(settings))
    # When a transaction writes a job to the outbox and commits
    with db.begin() as session:
        message_id = add_job(session, ACTOR, QUEUE, "committed", note="hello")
    # Then the actor runs with the outbox's message id and arguments, and the row is gone
    [run] = wait_for(lambda: runs.values("committed"), what="the committed job to run")
    assert run["message_id"] == str(message_id)
    assert run["note"] == "hello"
    wait_for(lambda: outbox_rows(db) == 0, what="the outbox to be empty")


def test_a_rolled_back_job_never_runs(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker with its outbox relay
    start_worker(relay=relay_settings(settings))
    # When one transaction writes a job and rolls back, and a later one writes a job and commits
    with db() as session:
        add_job(session, ACTOR, QUEUE, "rolled-back")
        session.rollback()
    commit_job(db, "committed-after")
    # Then the later job runs (the relay has passed that point) and the rolled-back one never does
    wait_for(lambda: runs.count("committed-after"), what="the committed job to run")
    assert runs.count("rolled-back") == 0
    assert outbox_rows(db) == 0


def test_the_relay_is_woken_by_notify_not_by_its_poll(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker whose relay polls only every 30 s, and has already relayed a first job
    start_worker(relay=relay_settings(settings, poll_s=30.0))
    commit_job(db, "warm-up")
    wait_for(lambda: runs.count("warm-up"), what="the warm-up job to run")
    # When another job is committed
    committed_at = time.time()
    commit_job(db, "woken")
    # Then it runs within a couple of seconds, long before the next poll
    [run] = wait_for(lambda: runs.values("woken"), what="the NOTIFY-woken job", timeout=5)
    assert run["at"] - committed_at < 2.0


def test_a_waiting_relay_stops_promptly(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker whose relay (polling every 30 s) is waiting for work
    worker = start_worker(relay=relay_settings(settings, poll_s=30.0))
    commit_job(db, "warm-up")
    wait_for(lambda: runs.count("warm-up"), what="the warm-up job to run")
    [relay] = [m._relay for m in worker.broker.middleware if isinstance(m, OutboxRelayMiddleware)]
    # When it is stopped (as the worker does at shutdown)
    asked = time.monotonic()
    relay.stop()
    # Then it has stopped within a second, not at its next poll
    assert not relay.is_alive()
    assert time.monotonic() - asked < 1.0


def test_jobs_committed_while_no_relay_ran_are_relayed_when_one_starts(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given five jobs committed while no worker was running
    markers = [f"backlog-{n}" for n in range(5)]
    for marker in markers:
        commit_job(db, marker)
    # When a worker starts (its relay moving two rows per batch)
    start_worker(relay=relay_settings(settings, poll_s=30.0, batch=2))
    # Then every job runs exactly once and the outbox is empty
    wait_for(lambda: all(runs.count(m) for m in markers), what="the backlog to run")
    wait_for(lambda: outbox_rows(db) == 0, what="the outbox to be empty")
    assert [runs.count(m) for m in markers] == [1] * 5


def test_a_delayed_job_does_not_run_before_its_delay(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker with its outbox relay
    start_worker(relay=relay_settings(settings))
    # When a job delayed by 1.2 s is committed
    with db.begin() as session:
        add_job(session, ACTOR, QUEUE, "delayed", delay_ms=1_200)
        created = session.query(OutboxMessage).one().created_at
    # Then the relay hands it to Redis at once, but it runs only once its delay has passed
    wait_for(lambda: outbox_rows(db) == 0, what="the delayed job to be relayed")
    assert runs.count("delayed") == 0
    [run] = wait_for(lambda: runs.values("delayed"), what="the delayed job to run")
    assert run["at"] >= created.timestamp() + 1.2 - 0.01


# --- Redis unreachable when the relay enqueues ---------------------------------------------------
def queued_messages(client: redis.Redis, settings: Settings, queue: str) -> list[dramatiq.Message[Any]]:
    data: list[bytes] = client.hvals(f"{settings.redis.dramatiq_namespace}:{queue}.msgs")  # type: ignore[assignment]
    return [dramatiq.Message.decode(item) for item in data]


def test_a_job_whose_enqueue_fails_after_commit_stays_in_the_outbox_until_redis_is_back(
    clean: None, db: sessionmaker[Session], settings: Settings, redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a relay whose broker's Redis has gone down
    relay_redis = dataclasses.replace(settings.redis, url=redis_server.url)
    broker = build_broker(dataclasses.replace(settings, redis=relay_redis))
    attempts = threading.Semaphore(0)
    real_enqueue = broker.enqueue

    def counted_enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        attempts.release()
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", counted_enqueue)
    relay = OutboxRelay(broker, relay_settings(settings, poll_s=0.2))
    redis_server.kill()
    relay.start()
    try:
        # When a job is committed and the relay tries (and fails) to enqueue it, twice
        started = datetime.now(UTC)
        message_id = commit_job(db, "through-an-outage", note="kept")
        for _ in range(2):
            assert attempts.acquire(timeout=10), "the relay never tried to enqueue"
        # Then the row is still in the outbox
        with db() as session:
            [row] = session.query(OutboxMessage).all()
        assert row.message_id == message_id and row.args == ["through-an-outage"]

        # When Redis is back
        redis_server.start()
        # Then the same relay moves it: it is queued in Redis with its message id, and the row is gone
        wait_for(lambda: outbox_rows(db) == 0, what="the row to be relayed after Redis came back")
        client = redis.Redis.from_url(redis_server.url)
        [queued] = queued_messages(client, settings, QUEUE)
        client.close()
        assert queued.message_id == str(message_id)
        assert queued.actor_name == ACTOR
        assert list(queued.args) == ["through-an-outage"]
        assert queued.kwargs == {"note": "kept"}
        assert queued.message_timestamp >= started.timestamp() * 1000
        assert relay.is_alive()
    finally:
        relay.stop()
        broker.client.close()
    assert not relay.is_alive()
