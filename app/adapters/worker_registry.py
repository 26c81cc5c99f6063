"""What the operations console shows of the worker processes, beyond `QueueInspector`'s view:
the jobs each one is running now, and the autoscaler's recent decisions.

- `<ns>:__farm_in_progress__` (hash, broker id → jobs running: Dramatiq messages plus the rows of
  the batch a batch thread runs), written about every second by each worker
  (`workers/in_progress.py`); an entry of a worker no longer registered is ignored.
- `<prefix>:ops:autoscale` (list, newest first, capped at `DECISIONS_KEPT`): one JSON object per
  worker the autoscaler started or stopped, `{at, queue, action, from, to, reason}` (`queue` is
  the pool: its queues joined by commas).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import redis

from app.adapters.queue_stats import QueueInspector
from app.keys import WORKER_IN_PROGRESS
from app.logging import get_logger
from app.timestamps import rfc3339

log = get_logger("workers.registry")

DECISIONS_KEPT: Final = 200
DECISIONS_SHOWN: Final = 50


def in_progress_key(namespace: str) -> str:
    return f"{namespace}:{WORKER_IN_PROGRESS}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DecisionLog:
    """The autoscaler's decisions, in a capped Redis list."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self.key = key

    def record(self, *, pool: str, action: str, before: int, after: int, reason: str) -> None:
        """Append one decision; a Redis error is logged (scaling goes on without its log)."""
        entry = {"at": rfc3339(datetime.now(UTC)), "queue": pool, "action": action, "from": before,
                 "to": after, "reason": reason}
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.lpush(self.key, json.dumps(entry))
            pipe.ltrim(self.key, 0, DECISIONS_KEPT - 1)
            pipe.execute()
        except redis.RedisError as error:
            log.warning("autoscale.decision_not_logged", error=repr(error))

    def latest(self, limit: int = DECISIONS_SHOWN) -> list[dict[str, Any]]:
        entries = []
        for raw in self._redis.lrange(self.key, 0, limit - 1):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _started_at(card: dict[str, Any]) -> str | None:
    try:
        return rfc3339(datetime.fromtimestamp(float(card["startedAt"]), UTC))
    except (KeyError, TypeError, ValueError):
        return None


def read_workers(client: redis.Redis, namespace: str, *, heartbeat_timeout_s: float) -> list[dict[str, Any]]:
    """Every registered worker process with a Dramatiq heartbeat, with its jobs in progress."""
    inspector = QueueInspector(client, namespace, heartbeat_timeout_s=heartbeat_timeout_s, queues=())
    snapshot = inspector.snapshot()
    running = {_text(k): v for k, v in client.hgetall(in_progress_key(namespace)).items()}
    items = []
    for beat in snapshot.workers:
        card = beat.card
        if card is None:
            continue
        try:
            in_progress = max(0, int(running.get(beat.worker_id) or 0))
        except ValueError:
            in_progress = 0
        items.append({"id": beat.worker_id, "host": str(card.get("host", "")), "pid": int(card.get("pid", 0)),
                      "queues": [str(q) for q in card.get("queues", [])],
                      "threads": int(card.get("threads", 0)), "inProgress": in_progress,
                      "lastBeatAgeS": beat.last_beat_age_s, "alive": beat.alive,
                      "startedAt": _started_at(card)})
    items.sort(key=lambda item: (item["host"], item["pid"], item["id"]))
    return items
