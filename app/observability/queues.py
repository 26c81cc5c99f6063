"""The broker's queues as Prometheus gauges, read at scrape time.

`QueueCollector` asks `QueueInspector` (a few pipelined O(1) commands per queue, no `KEYS`, no
scans) only when someone scrapes, and keeps the answer for `max_age_s` (1 s) so that several
scrapers, or several exporters behind one load balancer, don't multiply the cost. If Redis can't
answer, the scrape still succeeds: `farm_queue_stats_up` is 0 and the queue gauges are absent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.adapters.queue_stats import BrokerSnapshot, QueueInspector
from app.logging import get_logger

log = get_logger("observability.queues")

#: (metric name, help, attribute of `QueueStats`)
QUEUE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("farm_queue_ready_messages", "Messages waiting in the queue's ready list.", "ready"),
    ("farm_queue_in_flight_messages",
     "Messages fetched by workers and not yet acked (running or prefetched).", "in_flight"),
    ("farm_queue_delayed_messages",
     "Messages waiting for their eta (delays and retries' backoff).", "delayed"),
    ("farm_queue_dead_messages", "Messages dead-lettered by the broker (kept 7 days).", "dead"),
    ("farm_queue_oldest_ready_age_seconds", "How long the oldest ready message has been ready (0 if none).",
     "oldest_ready_age_s"),
)


class QueueCollector(Collector):
    """Per-queue depth, in flight, delayed, dead and oldest-ready age, plus broker heartbeats."""

    def __init__(self, inspector: Callable[[], QueueInspector], *, max_age_s: float = 1.0) -> None:
        self._make_inspector = inspector
        self._inspector: QueueInspector | None = None
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._taken_at = -float("inf")
        self._snapshot: BrokerSnapshot | None = None

    def snapshot(self) -> BrokerSnapshot | None:
        """The broker's state, at most `max_age_s` old (None if Redis did not answer)."""
        with self._lock:
            now = time.monotonic()
            if now - self._taken_at >= self._max_age_s:
                self._taken_at = now
                try:
                    if self._inspector is None:
                        self._inspector = self._make_inspector()
                    self._snapshot = self._inspector.snapshot()
                except Exception as error:  # a scrape must not fail because Redis did
                    log.warning("metrics.queue_stats_unavailable", error=repr(error))
                    self._snapshot = None
            return self._snapshot

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no Redis call when the collector is registered

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.snapshot()
        yield GaugeMetricFamily("farm_queue_stats_up", "1 if the broker's queues could be read.",
                                value=0 if snapshot is None else 1)
        if snapshot is None:
            return
        for name, documentation, attribute in QUEUE_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["queue"])
            for stats in snapshot.queues:
                family.add_metric([stats.queue], float(getattr(stats, attribute)))
            yield family
        yield GaugeMetricFamily(
            "farm_broker_heartbeats",
            "Processes with a Dramatiq heartbeat younger than WORKER_HEARTBEAT_TIMEOUT: the workers, and "
            "any process that enqueued lately (every broker command beats).",
            value=sum(1 for w in snapshot.workers if w.alive))
        yield GaugeMetricFamily(
            "farm_workers_alive",
            "Worker processes in the worker registry with a fresh Dramatiq heartbeat.",
            value=snapshot.live_workers)
