"""Consumers wake on work: a Dramatiq consumer idle on an empty queue starts fetching when the relay
hands it a job, not when its idle timeout ends (real Redis)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from app.settings import Settings
from tests.integration.workers_support import wait_for
from workers.waking import WakingRedisBroker

QUEUE = "wake-probe"


@pytest.fixture
def broker(settings: Settings) -> Iterator[WakingRedisBroker]:
    """A waking broker on a namespace of its own (its keys are deleted afterwards)."""
    client = redis.Redis.from_url(settings.redis.url)
    namespace = f"{settings.redis.dramatiq_namespace}-{uuid.uuid4().hex}"
    made = WakingRedisBroker(client=client, namespace=namespace, middleware=[])
    made.declare_queue(QUEUE)
    yield made
    for key in client.scan_iter(match=f"{namespace}:*"):
        client.delete(key)
    client.close()


def test_an_idle_consumer_takes_a_job_as_soon_as_it_is_handed_over(broker: WakingRedisBroker) -> None:
    client = broker.client
    consumer = broker.consume(QUEUE, prefetch=1, timeout=30_000)  # idle timeout: 30 s
    try:
        assert next(consumer) is None  # an empty fetch: from now on it waits on its wake-up list
        got: list[Any] = []
        # woken, it returns None (the worker's thread checks for a stop), and the next call fetches
        waiting = threading.Thread(target=lambda: got.extend([next(consumer), next(consumer)]), daemon=True)
        waiting.start()
        wait_for(lambda: any(c.get("cmd") == "blpop" for c in client.client_list()),
                 what="the consumer to wait on its wake-up list")

        handed_at = time.monotonic()
        broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="probe", args=(), kwargs={}, options={}))
        broker.wake({QUEUE: 1})
        waiting.join(timeout=10)

        assert not waiting.is_alive(), "the consumer slept on instead of waking"
        assert len(got) == 2 and got[0] is None and got[1] is not None and got[1].actor_name == "probe"
        assert time.monotonic() - handed_at < 10  # far inside the 30 s it would have slept
    finally:
        consumer.close()


def test_a_token_with_no_job_behind_it_costs_one_empty_fetch(broker: WakingRedisBroker) -> None:
    client = broker.client
    consumer = broker.consume(QUEUE, prefetch=1, timeout=30_000)
    try:
        assert next(consumer) is None
        broker.wake({QUEUE: 3})
        assert next(consumer) is None  # woken, fetched nothing, returned
        assert client.llen(broker.wake_key(QUEUE)) == 2
    finally:
        consumer.close()


def test_messages_fetched_but_never_handed_out_go_back_to_the_queue_on_close(
        broker: WakingRedisBroker) -> None:
    client = broker.client
    for _ in range(3):
        broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="probe", args=(), kwargs={}, options={}))
    consumer = broker.consume(QUEUE, prefetch=3, timeout=1_000)
    first = next(consumer)  # one handed out, two held in the consumer's cache
    assert first is not None and client.llen(f"{broker.namespace}:{QUEUE}") == 0
    consumer.close()  # a worker stopping: what it never handed to a thread is given back
    assert client.llen(f"{broker.namespace}:{QUEUE}") == 2
