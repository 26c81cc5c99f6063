"""Bodies of `/api/v1/admin/queues` (the dicts of `app.services.queue_overview`, typed)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from app.api.schemas import Request, Response


class QueueOut(Response):
    queue: str
    ready: int
    delayed: int
    in_flight: int
    dead: int
    #: Failed jobs of the registry not yet replayed.
    failed: int
    #: Jobs batch threads run straight from the ledger, due or running.
    in_ledger: int
    #: How long the oldest ready (or due ledger) job has waited.
    oldest_age_s: float
    paused: bool
    paused_at: str | None
    paused_by: str | None
    pause_reason: str | None
    #: Runs that ended per minute over the last 60 minutes, oldest first (the current minute last).
    throughput: list[int]
    #: Runs that failed per minute, same minutes.
    failures: list[int]
    #: Failures / runs over the hour (0 with no run).
    failure_rate: float


class QueueList(Response):
    items: list[QueueOut]
    #: Worker processes with a fresh heartbeat.
    workers_alive: int
    at: str


class PauseIn(Request):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | None = None
