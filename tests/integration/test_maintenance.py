"""Broker maintenance on a timer: a dead worker's fetched messages go back to their queues.

A second broker (another worker process, as Redis sees it) fetches messages — a ready one and a
delayed one — and then "dies": its heartbeat is set in the past, as a SIGKILL leaves it. One
`maintain()` pass of a live worker puts both back. (The real SIGKILL of a real worker process is
in `tests/e2e/test_worker_crash.py`.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from app.settings import Settings
from workers.maintenance import maintain

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
