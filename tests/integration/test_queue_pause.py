"""Pausing a queue stops real workers taking its jobs, and resuming starts them again (real PostgreSQL,
Redis and Dramatiq workers in this process).

"Not taken" is shown, never hoped for: the job is in Redis as `ready` (or waiting in the ledger)
and stays so for well past the view's refresh interval, with the worker up; after the resume it runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import dramatiq
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.db import libpq_dsn
from app.keys import DISPATCH_STEP, QUEUE_DISPATCH, QUEUE_MAINTENANCE, JobKind
from app.outbox import add_job
from app.services import audit, queue_pauses
from app.services.queue_pauses import REFRESH_S, PausedQueues
from app.settings import Settings
from jobs.base import JobContext, job
from models import Job
from tests.conftest import clean_state
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    Runs,
    WorkerFactory,
    broker_redis_fixture,
    db_fixture,
    start_worker_fixture,
    wait_for,
)
from workers.waking import WakingRedisBroker

PROBE = JobKind("test.queue_pause.probe", QUEUE_MAINTENANCE)
#: Long enough that every worker view has refreshed at least twice.
HELD_S = 3 * REFRESH_S
OPERATOR = audit.Operator.at_terminal("ops@test")
runs = Runs()


@job(PROBE.actor, queue=PROBE.queue, max_retries=0)
def probe(ctx: JobContext, tag: str) -> None:
    runs.record("probe", tag)


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    runs.clear()


def set_paused(db: sessionmaker[Session], queue: str, paused: bool) -> None:
    with db.begin() as session:
        if paused:
            queue_pauses.pause(session, queue, OPERATOR, "test")
        else:
            queue_pauses.resume(session, queue, OPERATOR)


def worker_sees(queue: str, paused: bool) -> Callable[[], bool]:
    def check() -> bool:
        view = getattr(jobs.broker, "paused_queues", None)
        return view is not None and view.is_paused(queue) is paused
    return check


def held(check: Callable[[], bool], *, what: str, for_s: float = HELD_S) -> None:
    """`check()` is true now and stays true for `for_s` seconds."""
    until = time.monotonic() + for_s
    while time.monotonic() < until:
        assert check(), what
        time.sleep(0.05)


def ready(client: redis.Redis, settings: Settings, queue: str) -> int:
    return int(client.llen(f"{settings.redis.dramatiq_namespace}:{queue}"))


def test_a_paused_queue_keeps_its_messages_ready_until_resumed(
        start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
        settings: Settings) -> None:
    # Given a running worker (with its relay) that ran a probe job
    start_worker(relay=settings)
    probe.send("before")
    wait_for(lambda: runs.count("probe") == 1, what="the first probe to run")

    # When an operator pauses `maintenance`, and a job is written to the ledger and one sent to Redis
    set_paused(db, QUEUE_MAINTENANCE, True)
    wait_for(worker_sees(QUEUE_MAINTENANCE, True), what="the worker to see the pause", timeout=5)
    with db.begin() as session:
        add_job(session, PROBE, "ledger")
    probe.send("direct")

    # Then the relay still hands its row over, and both wait in Redis as ready, untaken
    wait_for(lambda: ready(broker_redis, settings, QUEUE_MAINTENANCE) == 2, what="both jobs ready in Redis")
    held(lambda: ready(broker_redis, settings, QUEUE_MAINTENANCE) == 2 and runs.count("probe") == 1,
         what="a paused queue's messages stay ready and untaken")

    # When it is resumed
    set_paused(db, QUEUE_MAINTENANCE, False)

    # Then the worker takes both at once
    wait_for(lambda: runs.count("probe") == 3, what="both jobs to run after the resume", timeout=10)
    assert sorted(runs.values("probe")) == ["before", "direct", "ledger"]
    assert ready(broker_redis, settings, QUEUE_MAINTENANCE) == 0


def test_the_dispatcher_claims_nothing_while_dispatch_is_paused(
        start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings) -> None:
    assert settings.dispatch.batched, "the dispatcher thread runs dispatch rounds in this suite"
    # Given a paused `dispatch` queue and a worker running its dispatcher thread
    set_paused(db, QUEUE_DISPATCH, True)
    start_worker(relay=settings)
    assert worker_sees(QUEUE_DISPATCH, True)(), "a worker starts with the pauses already read"

    # When a dispatch round is written to the ledger
    with db.begin() as session:
        message_id = add_job(session, DISPATCH_STEP, str(uuid.uuid4()), 0)

    def state() -> str | None:
        with db() as session:
            return session.scalar(select(Job.state).where(Job.message_id == message_id))

    # Then nothing claims it: it stays waiting (the relay leaves batched rows alone too)
    held(lambda: state() == "waiting", what="a paused dispatch round stays waiting in the ledger")

    # When `dispatch` is resumed, the dispatcher runs it
    set_paused(db, QUEUE_DISPATCH, False)
    wait_for(lambda: state() == "done", what="the round to be done after the resume", timeout=10)


def test_a_pause_outlives_a_redis_flush(
        start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis,
        settings: Settings) -> None:
    # Given a paused queue, and then a Redis that forgot everything (restarted empty)
    set_paused(db, QUEUE_MAINTENANCE, True)
    for key in broker_redis.scan_iter(match=f"{settings.redis.dramatiq_namespace}:*"):
        broker_redis.delete(key)
    for key in broker_redis.scan_iter(match=f"{settings.redis.prefix}:*"):
        broker_redis.delete(key)

    # When a worker starts and a job is sent
    start_worker()
    probe.send("after-flush")

    # Then the pause holds (PostgreSQL is the truth)
    wait_for(lambda: ready(broker_redis, settings, QUEUE_MAINTENANCE) == 1, what="the job ready in Redis")
    held(lambda: ready(broker_redis, settings, QUEUE_MAINTENANCE) == 1 and runs.count("probe") == 0,
         what="the paused queue's job stays ready after the flush")
    set_paused(db, QUEUE_MAINTENANCE, False)
    wait_for(lambda: runs.count("probe") == 1, what="the job to run after the resume", timeout=10)


# --- one consumer, driven by hand -------------------------------------------------------------------
QUEUE = "pause-probe"


@pytest.fixture
def view(settings: Settings, database: str) -> Iterator[PausedQueues]:
    clean_state(settings)
    made = PausedQueues(libpq_dsn(settings.db.unpooled_url))
    made.start()
    yield made
    made.stop()


@pytest.fixture
def broker(settings: Settings, view: PausedQueues) -> Iterator[WakingRedisBroker]:
    client = redis.Redis.from_url(settings.redis.url)
    namespace = f"{settings.redis.dramatiq_namespace}-{uuid.uuid4().hex}"
    made = WakingRedisBroker(client=client, namespace=namespace, middleware=[])
    made.declare_queue(QUEUE)
    made.paused_queues = view
    yield made
    for key in client.scan_iter(match=f"{namespace}:*"):
        client.delete(key)
    client.close()


def test_a_consumer_gives_back_what_it_prefetched_when_its_queue_is_paused(
        broker: WakingRedisBroker, view: PausedQueues, db: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_pauses, "QUEUES", (*queue_pauses.QUEUES, QUEUE))
    client = broker.client
    for _ in range(3):
        broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="probe", args=(), kwargs={}, options={}))
    consumer = broker.consume(QUEUE, prefetch=3, timeout=1_000)
    try:
        # Given a consumer that handed out one message and holds two more
        assert next(consumer) is not None
        assert client.llen(f"{broker.namespace}:{QUEUE}") == 0

        # When its queue is paused (the view hears of it at once: NOTIFY)
        set_paused(db, QUEUE, True)
        wait_for(lambda: view.is_paused(QUEUE), what="the view to see the pause", timeout=REFRESH_S * 3)

        # Then it fetches nothing and gives back the two it held
        assert next(consumer) is None
        assert client.llen(f"{broker.namespace}:{QUEUE}") == 2
        assert next(consumer) is None and client.llen(f"{broker.namespace}:{QUEUE}") == 2

        # When the queue is resumed, it fetches again
        set_paused(db, QUEUE, False)
        wait_for(lambda: not view.is_paused(QUEUE), what="the view to see the resume", timeout=REFRESH_S * 3)
        got = wait_for(lambda: next(consumer), what="a message fetched after the resume", timeout=10)
        assert got.actor_name == "probe"
    finally:
        consumer.close()


@pytest.fixture
def view_logs_info(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The view's INFO lines reach `capture_logs`, whatever level an earlier test configured: the
    module's logger is cached at the level in force when first used, so it gets a fresh one."""
    import logging

    import structlog

    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                        cache_logger_on_first_use=False)
    monkeypatch.setattr(queue_pauses, "log", structlog.get_logger("queue_pauses"))
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_the_view_keeps_the_last_pauses_it_read_while_postgresql_is_away(
        view: PausedQueues, db: sessionmaker[Session], settings: Settings, view_logs_info: None) -> None:
    import structlog
    from sqlalchemy import text

    # Given a view that has read a paused queue
    set_paused(db, QUEUE_MAINTENANCE, True)
    wait_for(lambda: view.is_paused(QUEUE_MAINTENANCE), what="the view to see the pause", timeout=5)

    # When PostgreSQL goes away under it (its connection dropped, no server where it reconnects)
    reachable = view._dsn
    view._dsn = "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1"
    with structlog.testing.capture_logs() as logs:
        with db.begin() as session:
            session.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                 "AND query = 'SELECT queue FROM queue_pauses'"))
        wait_for(lambda: any(e["event"] == "queue_pauses.unreachable" for e in logs),
                 what="the view to notice", timeout=10)
        held(lambda: view.is_paused(QUEUE_MAINTENANCE), what="the last state read is kept",
             for_s=REFRESH_S * 3)

        # Then it said so once, however many reads failed
        assert [e["event"] for e in logs].count("queue_pauses.unreachable") == 1

        # And when PostgreSQL is back, it follows the rows again
        set_paused(db, QUEUE_MAINTENANCE, False)
        view._dsn = reachable
        wait_for(lambda: not view.is_paused(QUEUE_MAINTENANCE), what="the resume to be read", timeout=10)
    assert any(e["event"] == "queue_pauses.reachable_again" for e in logs)
