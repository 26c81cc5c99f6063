"""Helpers for the worker tests: a real Dramatiq worker in this process, on the run's real broker.

Import the fixtures you need into the test module (`from tests.integration.workers_support import
db_fixture, start_worker_fixture`): they register as `db`, `start_worker` and `broker_redis`.
Everything here runs against the run's real Redis namespace and PostgreSQL database; nothing is
stubbed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dramatiq
import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.settings import Settings
from models import FailedJob
from workers.middleware import BatchesMiddleware, LedgerRelayMiddleware

T = TypeVar("T")

#: How long a test waits for something the worker should do within a second or two (generous: CI
#: runs on a busy machine, and a condition met early ends the wait at once).
DEADLINE_S = 60.0


def wait_for(check: Callable[[], T], *, what: str, timeout: float = DEADLINE_S,
             interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def drain(queue: str, timeout_s: float = DEADLINE_S) -> None:
    """Wait until `queue` (ready, in flight and delayed) is empty on the real broker."""
    jobs.broker.join(queue, timeout=int(timeout_s * 1000))


class Runs:
    """What test actors did, recorded from the worker threads (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._seen: dict[str, list[Any]] = {}

    def record(self, key: str, value: Any = None) -> None:
        with self._lock:
            self._counts[key] += 1
            self._seen.setdefault(key, []).append(value)

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def values(self, key: str) -> list[Any]:
        with self._lock:
            return list(self._seen.get(key, []))

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._seen.clear()


@pytest.fixture(scope="session", name="db")
def db_fixture(database: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the run's database for the test's own reads and writes (not the worker's pool)."""
    engine = create_engine(database)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture(name="broker_redis")
def broker_redis_fixture(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis.url)
    yield client
    client.close()


WorkerFactory = Callable[..., dramatiq.Worker]


@pytest.fixture(name="start_worker")
def start_worker_fixture(clean: None) -> Iterator[WorkerFactory]:
    """Starts a real `dramatiq.Worker` on the farm's broker; stops it when the test ends.

    `relay` is `None` (no outbox relay in the worker) or the settings the worker's
    `LedgerRelayMiddleware` runs with; `batches`, the settings of its batch threads
    (`BatchesMiddleware`; default: the run's). The broker's middleware list is restored afterwards (a
    started worker adds its own middleware to the broker).
    """
    broker = jobs.broker
    saved = broker.middleware
    started: list[dramatiq.Worker] = []

    def start(*, relay: Settings | None = None, threads: int = 2,
              batches: Settings | None = None) -> dramatiq.Worker:
        assert not started, "one worker per test"
        middleware = []
        for item in saved:
            if isinstance(item, LedgerRelayMiddleware):
                if relay is None:
                    continue
                item = LedgerRelayMiddleware(relay)
            if isinstance(item, BatchesMiddleware) and batches is not None:
                item = BatchesMiddleware(batches)
            middleware.append(item)
        broker.middleware = middleware
        worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=threads)
        worker.start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if any(thread.is_alive() for thread in worker.workers):  # unless the test stopped it
                worker.stop(timeout=10_000)
        broker.middleware = saved


def failed_jobs(sessions: sessionmaker[Session], message_id: str | None = None) -> list[FailedJob]:
    with sessions() as session:
        query = select(FailedJob).order_by(FailedJob.failed_at)
        if message_id is not None:
            query = query.where(FailedJob.message_id == message_id)
        return list(session.scalars(query))


def count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def dead_letters(client: redis.Redis, settings: Settings, queue: str) -> list[dramatiq.Message[Any]]:
    """The messages Dramatiq dead-lettered for `queue` (`<namespace>:<queue>.XQ`)."""
    key = f"{settings.redis.dramatiq_namespace}:{queue}.XQ"
    redis_ids: list[bytes] = list(client.zrange(key, 0, -1))  # type: ignore[arg-type]
    if not redis_ids:
        return []
    data: list[bytes | None] = client.hmget(f"{key}.msgs", redis_ids)  # type: ignore[assignment]
    return [dramatiq.Message.decode(item) for item in data if item is not None]


def clock_tick(db: sessionmaker[Session], actor_name: str) -> None:
    """What the clock does for `actor_name` (one job written into the ledger), then wait until a
    worker started with its relay (`start_worker(relay=...)`) has done it."""
    from models import Job
    from models.jobs import LIVE_STATES
    from workers.clock import send

    send(actor_name, sessions=db)

    def done() -> bool:
        with db() as session:
            live = session.scalar(select(func.count()).select_from(Job).where(
                Job.dedupe_key == f"clock:{actor_name}", Job.state.in_(LIVE_STATES)))
            return live == 0

    wait_for(done, what=f"the clock's {actor_name} job to be done")


def side_broker(settings: Settings, redis_url: str, *actor_names: str) -> Any:
    """A broker of the farm's kind on another Redis (a throw-away one a test may kill and restart),
    carrying the farm's actors named here."""
    import dataclasses

    from workers.broker import build_broker

    side = dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=redis_url))
    broker = build_broker(side)
    for name in actor_names:
        broker.declare_actor(jobs.broker.get_actor(name))
    return broker


def run_worker_until(broker: Any, done: Callable[[], Any], *, what: str, queues: set[str]) -> None:
    """A real worker (one thread) on `broker` until `done()`."""
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1, queues=queues)
    worker.start()
    try:
        wait_for(done, what=what)
    finally:
        worker.stop(timeout=10_000)
