"""Broker maintenance on a timer: a dead worker's fetched messages go back to their queues.

A second broker (another worker process, as Redis sees it) fetches messages — a ready one and a
delayed one — and then "dies": its heartbeat is set in the past, as a SIGKILL leaves it. One
`maintain()` pass of a live worker puts both back. (The real SIGKILL of a real worker process is
in `tests/e2e/test_worker_crash.py`.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from app.adapters.queue_stats import QueueInspector
from app.keys import WORKER_REGISTRY
from app.settings import Settings
from workers.maintenance import maintain, register

QUEUE = "maintenance-test"


@pytest.fixture
def brokers(settings: Settings, clean: None) -> Iterator[tuple[RedisBroker, RedisBroker, redis.Redis]]:
    namespace = f"{settings.redis.dramatiq_namespace}-mt-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(settings.redis.url)
    made = [RedisBroker(client=client, namespace=namespace, heartbeat_timeout=2_000, maintenance_chance=0,
                        middleware=[]) for _ in range(2)]
    for broker in made:
        broker.declare_queue(QUEUE)
    yield made[0], made[1], client
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)
    client.close()


def message(delay: bool = False) -> dramatiq.Message[None]:
    options = {"eta": int(time.time() * 1000) + 60_000} if delay else {}
    return dramatiq.Message(queue_name=dq_name(QUEUE) if delay else QUEUE, actor_name="noop",
                            args=(), kwargs={}, options=options)


def test_a_dead_workers_ready_and_delayed_messages_are_requeued(
    brokers: tuple[RedisBroker, RedisBroker, redis.Redis],
) -> None:
    live, dying, client = brokers
    ready, delayed = message(), message(delay=True)
    live.enqueue(ready)
    live.enqueue(delayed)
    # the dying worker fetches both (they sit in its acks sets, out of the queues)
    assert len(dying.do_fetch(QUEUE, 10)) == 1
    assert len(dying.do_fetch(dq_name(QUEUE), 10)) == 1
    ns = live.namespace
    assert client.llen(f"{ns}:{QUEUE}") == client.llen(f"{ns}:{dq_name(QUEUE)}") == 0

    maintain(live, [QUEUE])  # its heartbeat is fresh: nothing moves
    assert client.llen(f"{ns}:{QUEUE}") == 0

    client.zadd(f"{ns}:__heartbeats__", {dying.broker_id: int(time.time() * 1000) - 60_000})  # SIGKILLed
    maintain(live, [QUEUE])
    assert client.llen(f"{ns}:{QUEUE}") == 1
    assert client.llen(f"{ns}:{dq_name(QUEUE)}") == 1
    fetched = live.do_fetch(QUEUE, 10) + live.do_fetch(dq_name(QUEUE), 10)
    ids = {dramatiq.Message.decode(raw).message_id for raw in fetched}
    assert ids == {ready.message_id, delayed.message_id}
    assert client.zscore(f"{ns}:__heartbeats__", dying.broker_id) is None  # the dead worker is forgotten


def test_only_registered_workers_count_and_a_dead_ones_entry_is_pruned(
    brokers: tuple[RedisBroker, RedisBroker, redis.Redis],
) -> None:
    worker, web, client = brokers
    ns = worker.namespace
    # Given a worker that registered and fetched (so it beats), a web process that only enqueued
    # (it beats too), and the entry of a worker that died long ago (no heartbeat left)
    register(worker, {"host": "h1", "pid": 11, "queues": [QUEUE], "threads": 8})
    worker.do_fetch(QUEUE, 1)
    web.enqueue(message())
    client.hset(f"{ns}:{WORKER_REGISTRY}", "long-dead",
                json.dumps({"host": "h0", "pid": 10, "seenAt": time.time() - 3600}))
    inspector = QueueInspector(client, ns, heartbeat_timeout_s=2, queues=(QUEUE,))
    assert {w.worker_id for w in inspector.snapshot().workers} == {worker.broker_id, web.broker_id}

    # When the worker's next pass runs
    register(worker, {"host": "h1", "pid": 11, "queues": [QUEUE], "threads": 8})

    # Then the dead one's entry is gone, and only the worker counts as a live worker
    assert set(client.hkeys(f"{ns}:{WORKER_REGISTRY}")) == {worker.broker_id.encode()}
    snapshot = inspector.snapshot()
    assert snapshot.live_workers == 1
    by_id = {w.worker_id: w for w in snapshot.workers}
    assert by_id[worker.broker_id].card is not None and by_id[worker.broker_id].card["pid"] == 11
    assert by_id[web.broker_id].alive and not by_id[web.broker_id].is_worker
