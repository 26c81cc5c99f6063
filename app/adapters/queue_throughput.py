"""Jobs finished and failed per queue per minute, in Redis, for the last hour's throughput.

One hash per queue and minute (`RedisKeys.queue_minute`: fields `finished`, every run that ended,
failed ones included, and `failed`, the runs that raised), kept `TTL_S` (2 h). Worker middleware
adds each Dramatiq message as it finishes, batch threads each batch (`workers/`); `read` takes a
window of minutes for several queues in one pipeline. The counters are figures for operators, not
state: a Redis restart empties them and nothing else changes; a failed write is logged and dropped.
"""

from __future__ import annotations

import time
from typing import Final

import redis

from app.keys import RedisKeys
from app.logging import get_logger

log = get_logger("queue_throughput")

#: How long a minute's counters are kept (s).
TTL_S: Final = 2 * 3600
FINISHED: Final = "finished"
FAILED: Final = "failed"


def minute_of(epoch_s: float) -> int:
    return int(epoch_s // 60)


class ThroughputCounters:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._redis = client
        self._keys = keys
        self._failing = False

    def add(self, queue: str, *, finished: int = 0, failed: int = 0, at: float | None = None) -> None:
        """Count `finished` runs (of which `failed` raised) of `queue` in the minute of `at` (now)."""
        if finished <= 0 and failed <= 0:
            return
        key = self._keys.queue_minute(queue, minute_of(time.time() if at is None else at))
        try:
            pipe = self._redis.pipeline(transaction=False)
            if finished > 0:
                pipe.hincrby(key, FINISHED, finished)
            if failed > 0:
                pipe.hincrby(key, FAILED, failed)
            pipe.expire(key, TTL_S)
            pipe.execute()
            self._failing = False
        except redis.RedisError as error:  # figures only: the job's outcome stands
            if not self._failing:
                log.warning("queue_throughput.write_failed", queue=queue, error=repr(error))
                self._failing = True

    def read(self, queues: tuple[str, ...] | list[str], *, minutes: int = 60,
             now: float | None = None) -> dict[str, tuple[list[int], list[int]]]:
        """{queue: (finished per minute, failed per minute)}, `minutes` each, oldest first, the
        current (partial) minute last."""
        last = minute_of(time.time() if now is None else now)
        window = range(last - minutes + 1, last + 1)
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            for minute in window:
                pipe.hmget(self._keys.queue_minute(queue, minute), [FINISHED, FAILED])
        answers = iter(pipe.execute())
        figures: dict[str, tuple[list[int], list[int]]] = {}
        for queue in queues:
            pairs = [next(answers) for _ in window]
            figures[queue] = ([int(done or 0) for done, _ in pairs], [int(bad or 0) for _, bad in pairs])
        return figures
