"""A circuit breaker per provider and process: after repeated transient failures, calls pause.

closed ──`failure_threshold` transient failures in a row──▶ open ──`pause_s` later──▶ half-open
  ▲                                                           ▲                        │
  └──────────────────── a call succeeds ◀─────────────────────┴── its one trial call fails

While open, `guard()` raises `CircuitOpen` at once (nothing is sent, so nothing can be sent
twice); a job that meets it waits in the ledger until the pause ends, without spending a retry
(`jobs.base`). Half-open lets one trial call through; the others keep waiting. Each pause after a
failed trial is twice the last, up to `max_pause_s`. Only transient failures (timeouts, refused
connections, 5xx, 429) count: a refusal about one message (an invalid number) says nothing about
the provider's health.

Per process, not shared: each worker process learns on its own after a handful of failures, so a
farm-wide outage costs `failure_threshold` failed calls per process, and no shared state (Redis)
has to be up for the breaker to work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar

from app.errors import CircuitOpen, ProviderError
from app.logging import get_logger

log = get_logger("circuit")

T = TypeVar("T")

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class CircuitBreaker:
    def __init__(self, provider: str, *, failure_threshold: int = 5, pause_s: float = 10.0,
                 max_pause_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.base_pause_s = pause_s
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._pause_s = pause_s
        self._open_until = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() >= self._open_until:
                return HALF_OPEN
            return self._state

    def guard(self) -> None:
        """Before a call: raise `CircuitOpen` while paused (let one trial through when half-open)."""
        with self._lock:
            now = self._clock()
            if self._state == CLOSED:
                return
            if self._state == OPEN and now >= self._open_until:
                self._state = HALF_OPEN
                self._trial_running = False
            if self._state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            wait = self._open_until - now if self._state == OPEN else min(1.0, self._pause_s)
            raise CircuitOpen(self.provider, retry_after_s=wait)

    def succeeded(self) -> None:
        with self._lock:
            if self._state != CLOSED:
                log.info("circuit.closed", provider=self.provider)
            self._state, self._failures, self._trial_running = CLOSED, 0, False
            self._pause_s = self.base_pause_s

    def failed(self, error: ProviderError) -> None:
        """After a call that raised `error` (only a transient one counts)."""
        if not error.transient:
            self.succeeded()  # the provider answered: it is up
            return
        with self._lock:
            now = self._clock()
            if self._state == HALF_OPEN:
                self._pause_s = min(self.max_pause_s, self._pause_s * 2)
                self._open(now)
                return
            self._failures += 1
            if self._state == CLOSED and self._failures >= self.failure_threshold:
                self._open(now)

    def _open(self, now: float) -> None:
        self._state, self._open_until, self._trial_running = OPEN, now + self._pause_s, False
        log.warning("circuit.opened", provider=self.provider, pause_s=self._pause_s, failures=self._failures)

    def call(self, action: Callable[[], T]) -> T:
        """Run `action` through the breaker (`ProviderError`s are counted and re-raised)."""
        self.guard()
        try:
            result = action()
        except ProviderError as error:
            self.failed(error)
            raise
        except BaseException:
            self.succeeded_or_release()
            raise
        self.succeeded()
        return result

    def succeeded_or_release(self) -> None:
        """A call ended with an error that says nothing about the provider: free the trial slot."""
        with self._lock:
            self._trial_running = False
