"""When the autoscaler adds or removes a worker: the queues' load in, a decision out (pure: the
clock is passed in, so `tests/unit/test_autoscale.py` drives it without processes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.adapters.queue_stats import BrokerSnapshot
from app.settings import AutoscaleSettings

Action = Literal["add", "remove", "hold"]


@dataclass(frozen=True)
class Load:
    """The figures a decision is made from."""

    workers: int
    ready: int
    in_flight: int
    oldest_ready_age_s: float

    @classmethod
    def of(cls, snapshot: BrokerSnapshot, workers: int) -> Load:
        return cls(workers=workers, ready=sum(q.ready + q.in_ledger for q in snapshot.queues),
                   in_flight=sum(q.in_flight for q in snapshot.queues),
                   oldest_ready_age_s=max((q.oldest_ready_age_s for q in snapshot.queues), default=0.0))


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


@dataclass
class ScalePolicy:
    """When to add or remove a worker (pure: the clock is passed in)."""

    settings: AutoscaleSettings
    threads: int
    idle_since: float | None = None

    def decide(self, load: Load, now: float) -> Decision:
        scale, n = self.settings, load.workers
        if n < scale.min_workers:
            return Decision("add", "below_minimum")
        behind = []
        if load.oldest_ready_age_s > scale.target_age_s:
            behind.append("oldest_ready_age")
        if load.ready > scale.target_depth * n:
            behind.append("ready_per_worker")
        if behind:
            self.idle_since = None
            if n >= scale.max_workers:
                return Decision("hold", "at_maximum")
            return Decision("add", "+".join(behind))
        idle = load.ready == 0 and load.in_flight <= (n - 1) * self.threads / 2
        if not idle or n <= scale.min_workers:
            self.idle_since = None
            return Decision("hold", "busy" if not idle else "at_minimum")
        if self.idle_since is None:
            self.idle_since = now
        if now - self.idle_since < scale.cooldown_s:
            return Decision("hold", "cooling_down")
        self.idle_since = now  # the next removal waits a full cool-down again
        return Decision("remove", "idle")
