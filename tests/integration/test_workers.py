"""The worker middleware, end to end: a real Dramatiq worker on the run's Redis and PostgreSQL.

Covers the durable failure registry (`FailedJobRecorder` + `DurableRetries`), the unit of work per
message (`SessionPerMessage` + `jobs.base.job`), the log context, and `sessions.end_sockets`.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq
import msgspec
import pytest
import redis
import structlog
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.keys import QUEUE_MAINTENANCE, RedisKeys
from app.services.failed_jobs import failed_job_row
from app.settings import Settings
from jobs.base import JobContext, job
from models import AuditEntry, FailedJob
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    Runs,
    WorkerFactory,
    broker_redis_fixture,
    count,
    db_fixture,
    dead_letters,
    drain,
    failed_jobs,
    start_worker_fixture,
    wait_for,
)
from workers import resources
from workers.resources import get_resources

QUEUE = "test-workers"
runs = Runs()


class CarrierDown(Exception):
    """A failure worth retrying."""


class Refused(Exception):
    """A failure no retry can fix (listed in `throws=`)."""


@job("test.always_fails", queue=QUEUE, max_retries=2, min_backoff_ms=10, max_backoff_ms=50)
def always_fails(ctx: JobContext, ride_id: str, *, reason: str) -> None:
    runs.record(ctx.message_id)
    raise CarrierDown(f"carrier down for ride {ride_id}: {reason}")


@job("test.refused", queue=QUEUE, max_retries=5, min_backoff_ms=10, throws=(Refused,))
def refuse_at_once(ctx: JobContext, ride_id: str) -> None:
    runs.record(ctx.message_id)
    raise Refused(f"ride {ride_id} can't be charged")


@job("test.flaky_then_refused", queue=QUEUE, max_retries=5, min_backoff_ms=10, max_backoff_ms=50,
     throws=(Refused,))
def flaky_then_refused(ctx: JobContext) -> None:
    runs.record(ctx.message_id)
    if runs.count(ctx.message_id) == 1:
        raise CarrierDown("first run: transient")
    raise Refused("second run: permanent")


def _committed_elsewhere(marker: str) -> bool:
    """Whether another session (another transaction) sees the job's audit row."""
    with get_resources().sessions() as other:
        return other.query(AuditEntry).filter_by(target_id=marker).count() == 1


@job("test.write_audit", queue=QUEUE, max_retries=0)
def write_audit(ctx: JobContext, marker: str, fail: bool) -> None:
    ctx.uow.session.add(AuditEntry(actor_role="system", action="test.job", target_type="test",
                                   target_id=marker))
    ctx.uow.session.flush()  # the row reaches PostgreSQL inside the job's transaction
    ctx.uow.after_commit(lambda: runs.record(f"after-commit:{marker}", _committed_elsewhere(marker)))
    if fail:
        raise CarrierDown("failed after writing")


gate = threading.Event()


@job("test.waits_for_gate", queue=QUEUE, max_retries=0)
def waits_for_gate(ctx: JobContext) -> None:
    runs.record("gate-entered")
    assert gate.wait(10)
    raise CarrierDown("failed while the worker was stopping")


@job("test.log_context", queue=QUEUE)
def log_context(ctx: JobContext) -> None:
    runs.record("log-context", dict(structlog.contextvars.get_contextvars()))


@pytest.fixture(autouse=True)
def _fresh_runs() -> None:
    runs.clear()
    gate.clear()


def only_failure(db: sessionmaker[Session], message_id: str) -> FailedJob:
    rows = wait_for(lambda: failed_jobs(db, message_id), what=f"failed_jobs row for {message_id}")
    assert len(rows) == 1
    return rows[0]


# --- the failure registry ------------------------------------------------------------------------
def test_exhausted_retries_are_recorded_once_with_everything_replay_needs(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings,
) -> None:
    # Given a worker and a job that always fails (2 retries allowed)
    start_worker()
    # When it is sent
    before = datetime.now(UTC)
    message = always_fails.send("ride-42", reason="timeout")

    # Then it runs three times, is recorded once, and its dead letter stays in Redis
    row = only_failure(db, message.message_id)
    drain(QUEUE)
    assert runs.count(message.message_id) == 3
    assert count(db, FailedJob) == 1
    assert row.actor == "test.always_fails"
    assert row.queue == QUEUE
    assert row.args == ["ride-42"]
    assert row.kwargs == {"reason": "timeout"}
    assert row.options["retries"] == 3
    assert "traceback" not in row.options
    assert row.exception_type == f"{__name__}.CarrierDown"
    assert row.exception_message == "carrier down for ride ride-42: timeout"
    assert "always_fails" in row.traceback and "CarrierDown" in row.traceback
    assert row.attempts == 3
    assert row.source == "worker"
    assert row.enqueued_at is not None
    assert abs(row.enqueued_at.timestamp() * 1000 - message.message_timestamp) < 1
    assert before.timestamp() - 1 < row.enqueued_at.timestamp() <= row.failed_at.timestamp()
    [letter] = dead_letters(broker_redis, settings, QUEUE)
    assert letter.message_id == message.message_id
    assert letter.actor_name == "test.always_fails"
    # and a record made later from the dead letter alone counts the same attempts
    imported = failed_job_row(letter.message_id, letter.queue_name, letter.actor_name,
                              list(letter.args), letter.kwargs, letter.options, None,
                              letter.message_timestamp, source="dead-letter",
                              traceback_text=letter.options.get("traceback"))
    assert imported["attempts"] == 3
    assert imported["queue"] == QUEUE and imported["args"] == ["ride-42"]


def test_an_exception_listed_in_throws_fails_at_once(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings,
) -> None:
    # Given a job that refuses the work with an exception it declares in `throws=`
    start_worker()
    # When it is sent
    message = refuse_at_once.send("ride-7")
    # Then it is not retried: one run, recorded as one attempt, dead-lettered
    row = only_failure(db, message.message_id)
    drain(QUEUE)
    assert runs.count(message.message_id) == 1
    assert row.attempts == 1
    assert row.exception_type == f"{__name__}.Refused"
    assert row.exception_message == "ride ride-7 can't be charged"
    assert "refuse_at_once" in row.traceback
    assert [m.message_id for m in dead_letters(broker_redis, settings, QUEUE)] == [message.message_id]


def test_attempts_count_every_run_when_a_retried_job_then_refuses(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a job that fails transiently once, then refuses on its retry
    start_worker()
    # When it is sent
    message = flaky_then_refused.send()
    # Then the record counts both runs
    row = only_failure(db, message.message_id)
    drain(QUEUE)
    assert runs.count(message.message_id) == 2
    assert row.attempts == 2
    assert row.exception_type == f"{__name__}.Refused"


def test_a_message_past_its_age_limit_is_recorded_without_running(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings,
) -> None:
    # Given a message first enqueued a minute ago with a 1 s age limit
    start_worker()
    stale = refuse_at_once.message_with_options(args=("ride-9",), max_age=1_000).copy(
        message_timestamp=int(time.time() * 1000) - 60_000
    )
    # When a worker receives it
    jobs.broker.enqueue(stale)
    # Then it never runs, and it is recorded (0 runs, the age limit as the reason) and dead-lettered
    row = only_failure(db, stale.message_id)
    drain(QUEUE)
    assert runs.count(stale.message_id) == 0
    assert row.attempts == 0
    assert row.exception_type.endswith("SkipMessage")
    assert "age limit" in row.exception_message
    assert [m.message_id for m in dead_letters(broker_redis, settings, QUEUE)] == [stale.message_id]


def test_a_retry_that_cannot_be_enqueued_is_recorded_not_lost(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker whose broker can't enqueue retries (Redis refuses writes of delayed messages)
    real_enqueue = jobs.broker.enqueue

    def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        if delay is not None:
            raise redis.exceptions.ConnectionError("Redis went away")
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(jobs.broker, "enqueue", enqueue)
    start_worker()
    # When a retryable job fails
    message = always_fails.send("ride-5", reason="timeout")
    # Then the failure is recorded after one run, and the message is dead-lettered, not acked away
    row = only_failure(db, message.message_id)
    drain(QUEUE)
    assert runs.count(message.message_id) == 1
    assert row.attempts == 1
    assert row.exception_type == f"{__name__}.CarrierDown"
    assert [m.message_id for m in dead_letters(broker_redis, settings, QUEUE)] == [message.message_id]


# --- the unit of work per message ----------------------------------------------------------------
def test_a_job_that_returns_commits_and_then_runs_its_after_commit_actions(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a worker
    start_worker()
    marker = uuid.uuid4().hex
    # When a job writes a row, registers an after-commit action and returns
    write_audit.send(marker, False)
    drain(QUEUE)
    # Then the row is committed, and the action ran once, when the row was already visible
    assert count(db, AuditEntry, AuditEntry.target_id == marker) == 1
    assert runs.values(f"after-commit:{marker}") == [True]
    assert failed_jobs(db) == []


def test_a_job_that_raises_rolls_back_and_never_runs_its_after_commit_actions(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a worker
    start_worker()
    marker = uuid.uuid4().hex
    # When a job writes a row, registers an after-commit action, then raises (no retries)
    message = write_audit.send(marker, True)
    only_failure(db, message.message_id)
    drain(QUEUE)
    # Then its row was rolled back and the action never ran
    assert count(db, AuditEntry, AuditEntry.target_id == marker) == 0
    assert runs.count(f"after-commit:{marker}") == 0


def test_every_message_gives_its_connection_back(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a worker
    start_worker()
    # When jobs that commit and jobs that fail have run
    sent = [write_audit.send(uuid.uuid4().hex, index % 2 == 0) for index in range(6)]
    sent.append(refuse_at_once.send("ride-1"))
    wait_for(lambda: len(failed_jobs(db)) == 4, what="the four failures to be recorded")
    drain(QUEUE)
    # Then no session is left holding a pooled connection
    assert count(db, AuditEntry) == 3
    assert get_resources().engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_job_running_when_the_worker_stops_finishes_and_the_worker_closes_its_clients(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a worker running a job that is still busy
    worker = start_worker()
    message = waits_for_gate.send()
    wait_for(lambda: runs.count("gate-entered"), what="the job to start")
    # When the worker is asked to stop, and the job then fails
    stopping = threading.Thread(target=worker.stop)
    stopping.start()
    wait_for(lambda: not any(thread.running for thread in worker.workers), what="shutdown to begin")
    gate.set()
    stopping.join(timeout=10)
    # Then the failure is recorded, and once stopped the worker holds no database or Redis clients
    assert not stopping.is_alive()
    only_failure(db, message.message_id)
    assert resources._resources is None


def test_every_job_logs_with_its_message_actor_and_queue(start_worker: WorkerFactory) -> None:
    # Given a worker
    start_worker()
    # When a job runs
    message = log_context.send()
    drain(QUEUE)
    # Then its log context names the message, the actor and the queue
    [bound] = runs.values("log-context")
    assert bound["message_id"] == message.message_id
    assert bound["actor"] == "test.log_context"
    assert bound["queue"] == QUEUE


# --- sessions.end_sockets ------------------------------------------------------------------------
def _listen_to_bus(client: redis.Redis, settings: Settings) -> redis.client.PubSub:
    """A subscriber on the socket bus, subscribed before this returns."""
    pubsub = client.pubsub()
    pubsub.subscribe(RedisKeys(settings.redis).socketio_channel())
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    return pubsub


def _bus_messages(pubsub: redis.client.PubSub, *, quiet_s: float = 0.1) -> list[dict[str, Any]]:
    """Everything published on the socket bus until it stays quiet for `quiet_s`."""
    received = []
    while (item := pubsub.get_message(timeout=quiet_s)) is not None:
        received.append(msgspec.json.decode(item["data"]))
    pubsub.close()
    return received


def test_ending_sockets_of_a_user_without_live_sockets_does_nothing(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings,
) -> None:
    # Given a user with no tracked sockets, and someone listening on the socket bus
    user_id = str(uuid.uuid4())
    pubsub = _listen_to_bus(broker_redis, settings)
    start_worker()
    # When their sockets are ended
    jobs.sessions.end_sockets.send(user_id, "logout_all")
    drain(QUEUE_MAINTENANCE)
    # Then the job succeeds and nothing is emitted
    assert failed_jobs(db) == []
    assert dead_letters(broker_redis, settings, QUEUE_MAINTENANCE) == []
    assert _bus_messages(pubsub) == []


# Ending live sockets (on every socket server, acked): tests/integration/test_socket_sessions.py
