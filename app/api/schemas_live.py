"""Bodies of the operations console's live routes: workers, schedules, the live map (camelCase).

The services answer plain JSON-ready dicts with these keys; `of` checks them into the schema."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from app.api.schemas import Response

T = TypeVar("T")


def shaped(kind: type[T], body: dict[str, Any]) -> T:
    """A service's camelCase dict as the response schema `kind`."""
    return msgspec.convert(body, kind)


class WorkerOut(Response):
    id: str
    host: str
    pid: int
    queues: list[str]
    threads: int
    #: Jobs running now: Dramatiq messages plus the rows of the batch a batch thread runs.
    in_progress: int
    last_beat_age_s: float
    alive: bool
    started_at: str | None


class ScaleDecisionOut(Response, omit_defaults=True):
    at: str
    #: `add` (a worker started: minimum, scale-up, replacing one that exited) or `remove`.
    action: str
    from_: int = msgspec.field(name="from")
    to: int
    reason: str
    #: The autoscaler's pool: its queues, joined by commas.
    queue: str | None = None


class WorkerList(Response):
    items: list[WorkerOut]
    #: The last 50 decisions, newest first.
    autoscaler: list[ScaleDecisionOut]
    at: str


class ScheduleOut(Response):
    name: str
    queue: str
    every_s: int
    last_run_at: str | None
    #: `clock` or `manual`.
    last_trigger: str | None
    last_by: str | None
    next_run_at: str | None
    runs: int


class ScheduleList(Response):
    items: list[ScheduleOut]


class ScheduleRunOut(Response, omit_defaults=True):
    name: str
    queued: bool
    job_id: str | None = None
    #: Why nothing was queued (`already waiting`).
    reason: str | None = None


class BoundsOut(Response):
    min_lat: float
    min_lng: float
    max_lat: float
    max_lng: float


class MapPlaceOut(Response):
    lat: float
    lng: float
    address: str | None = None


class MapRideOut(Response):
    ride_id: str
    status: str
    pickup: MapPlaceOut
    dropoff: MapPlaceOut
    driver_id: str | None
    customer_id: str
    updated_at: str


class MapDriverOut(Response):
    driver_id: str
    lat: float
    lng: float
    online: bool
    vehicle_type: str
    at: str | None


class MapOut(Response):
    region: str
    bounds: BoundsOut | None
    rides: list[MapRideOut]
    drivers: list[MapDriverOut]
