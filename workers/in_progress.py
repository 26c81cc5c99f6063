"""How many jobs this worker process is running now, for `GET /admin/workers`.

`TALLY` counts the Dramatiq messages between `before_process_message` and their after-hook, plus,
for each batch thread (`workers/batches.py`), the rows of the batch it is running. `InProgress`
(a middleware) writes the total to `<ns>:__farm_in_progress__` under this process's broker id
about every second (when it changed, else every `REFRESH_S`), and removes it at shutdown.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker

from app.adapters.worker_registry import in_progress_key
from app.logging import get_logger

log = get_logger("workers.in_progress")

#: How often the count is written (s), and rewritten even when unchanged (s).
WRITE_S: Final = 1.0
REFRESH_S: Final = 10.0
#: The hash lapses this long after the last write of any worker (s).
KEY_TTL_S: Final = 3600


class Tally:
    """Thread-safe: running messages, and each batch thread's running batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages = 0
        self._batches: dict[int, int] = {}

    def message_started(self) -> None:
        with self._lock:
            self._messages += 1

    def message_finished(self) -> None:
        with self._lock:
            self._messages = max(0, self._messages - 1)

    def batch_running(self, jobs: int) -> None:
        """The calling batch thread now runs `jobs` rows (0: none)."""
        with self._lock:
            self._batches[threading.get_ident()] = jobs

    def total(self) -> int:
        with self._lock:
            return self._messages + sum(self._batches.values())


TALLY = Tally()


class InProgress(Middleware):
    """Counts running messages into `TALLY` and writes the total to Redis (module docstring)."""

    def __init__(self) -> None:
        self._counted = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        TALLY.message_started()
        self._counted.value = True

    def after_process_message(self, broker: Broker, message: MessageProxy, *, result: Any = None,
                              exception: Any = None) -> None:
        if getattr(self._counted, "value", False):  # a message skipped before our hook isn't counted
            self._counted.value = False
            TALLY.message_finished()

    after_skip_message = after_process_message

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if isinstance(broker, RedisBroker):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(broker,), name="in-progress", daemon=True)
            self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if isinstance(broker, RedisBroker):
            try:
                broker.client.hdel(in_progress_key(broker.namespace), broker.broker_id)
            except Exception as error:  # Redis away: the entry is ignored once unregistered
                log.warning("worker.in_progress_not_removed", error=repr(error))

    def _run(self, broker: RedisBroker) -> None:
        key, written, written_at = in_progress_key(broker.namespace), None, 0.0
        while True:
            count = TALLY.total()
            if count != written or time.monotonic() - written_at >= REFRESH_S:
                try:
                    pipe = broker.client.pipeline(transaction=False)
                    pipe.hset(key, broker.broker_id, count)
                    pipe.expire(key, KEY_TTL_S)
                    pipe.execute()
                    written, written_at = count, time.monotonic()
                except Exception as error:  # Redis away: written again at the next pass
                    log.debug("worker.in_progress_not_written", error=repr(error))
            if self._stop.wait(WRITE_S):
                return
