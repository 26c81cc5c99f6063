"""Bounded crash recovery: every worker process runs Dramatiq's broker maintenance on a timer.

A worker killed with SIGKILL (or OOM) leaves the messages it had fetched — ready ones and delayed
ones held in memory until their eta — in its Redis acks sets. Dramatiq gives them back only when
the dead worker's heartbeat is older than `heartbeat_timeout` *and* a maintenance pass runs for
that queue, which it does on a random `maintenance_chance` per million broker commands: on a quiet
farm that can take minutes (Dramatiq issue #527).

Here a thread in each worker process runs the broker's own maintenance (its dispatch script with
the maintenance flag set, on a read-only `qsize` command) for every queue and its delay queue
every `WORKER_MAINTENANCE_INTERVAL` seconds, so a dead worker's messages run again at most
`WORKER_HEARTBEAT_TIMEOUT + WORKER_MAINTENANCE_INTERVAL` seconds after its last heartbeat — 15 + 5 s
by default — on whichever worker is alive (or the next one to start: it runs a pass at boot).

The trade-off: a live worker whose process stops heart-beating for longer than the timeout (its
consumers frozen, e.g. a C extension holding the GIL) is taken for dead, and its messages run
twice. Consumers heartbeat on every fetch (every `WORKER_POLL_TIMEOUT_MS` when idle) and ack, so
that takes a stall of many seconds; the actors are idempotent, so a second run changes nothing.

The same thread keeps this process in the worker registry (`<ns>:__farm_workers__`: host, pid,
queues, threads, by broker id), which `farmctl queues` joins with Dramatiq's heartbeats: those
also list every process that merely enqueues (web, clock), which are not workers. A registered
worker whose heartbeat Dramatiq has dropped (dead, its messages requeued) is pruned.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name

from app.keys import WORKER_REGISTRY
from app.logging import get_logger
from app.settings import Settings

log = get_logger("worker.maintenance")


def maintain(broker: RedisBroker, queues: list[str] | None = None) -> None:
    """One maintenance pass over every queue (and delay queue) the broker declares."""
    dispatch = broker.scripts["dispatch"]
    names = queues if queues is not None else sorted(broker.get_declared_queues())
    for queue in names:
        for name in (queue, dq_name(queue)):
            dispatch(args=["qsize", current_millis(), name, broker.broker_id, broker.heartbeat_timeout,
                           broker.dead_message_ttl, 1, 7999], keys=[broker.namespace])


class BrokerMaintenance(Middleware):
    """Runs `maintain` at worker boot and then every `interval_s` seconds, in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.interval_s = settings.worker.maintenance_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if not isinstance(broker, RedisBroker) or self.interval_s <= 0:
            return
        self._stop.clear()
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        card = {"host": socket.gethostname(), "pid": os.getpid(), "queues": queues,
                "threads": worker.worker_threads, "startedAt": time.time()}
        self._thread = threading.Thread(target=self._run, args=(broker, card), name="broker-maintenance",
                                        daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if isinstance(broker, RedisBroker):
            try:
                broker.client.hdel(registry_key(broker), broker.broker_id)
            except Exception as exc:  # Redis away: the next worker's pass prunes the entry
                log.warning("worker.unregister_failed", error=repr(exc))

    def _run(self, broker: RedisBroker, card: dict[str, Any]) -> None:
        while True:
            try:
                register(broker, card)
                maintain(broker)
            except Exception as exc:  # Redis away: the next pass retries; the consumers report it too
                log.warning("worker.maintenance_failed", error=repr(exc))
            if self._stop.wait(self.interval_s):
                return


def registry_key(broker: RedisBroker) -> str:
    return f"{broker.namespace}:{WORKER_REGISTRY}"


#: A registered worker with no Dramatiq heartbeat is pruned once its own entry is this old (s):
#: long enough for a new worker's first fetch to write its heartbeat.
PRUNE_AFTER_S = 60.0


def register(broker: RedisBroker, card: dict[str, Any]) -> None:
    """Keep this worker in the registry and drop the entries of workers Dramatiq found dead."""
    key = registry_key(broker)
    client = broker.client
    now = time.time()
    client.hset(key, broker.broker_id, json.dumps({**card, "seenAt": now}))
    entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in client.hgetall(key).items()}
    others = [member for member in entries if member != broker.broker_id]
    beats = client.zmscore(f"{broker.namespace}:__heartbeats__", others) if others else []
    gone = []
    for member, beat in zip(others, beats, strict=True):
        try:
            seen = float(json.loads(entries[member]).get("seenAt", 0))
        except (ValueError, TypeError, AttributeError):
            seen = 0.0
        if beat is None and now - seen > PRUNE_AFTER_S:
            gone.append(member)
    if gone:
        client.hdel(key, *gone)
