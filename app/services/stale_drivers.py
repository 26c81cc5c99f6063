"""Drivers whose app went quiet while online: taken offline and out of the GEO index.

Dispatch already skips a driver not seen for `DRIVER_STALE_AFTER` (`nearby(seen_after=...)`) but
never removes it, so without this the index and the `online` rows only grow. `drivers.prune_stale`
(clock, every `DRIVER_PRUNE_INTERVAL` s) does two things, each safe on its own against a report
arriving meanwhile:

1. **Offline in PostgreSQL, the truth.** An online driver without a ride whose last report is
   older than `DRIVER_PRUNE_AFTER` (15 min) is set `offline`. Its app is gone (killed, phone off,
   location permission revoked); when it comes back, a background position report must not make
   it offerable again before the driver chose to work: it goes online again (`POST /online`).
   One UPDATE over rows locked `FOR UPDATE SKIP LOCKED`, re-checked under the lock: a driver whose
   report is being written (row locked) is skipped, one whose report committed meanwhile no longer
   matches, and a report committing after ours sees `offline` and indexes nothing. After commit
   each is removed from the index with the database clock as its version, so the late index write
   of an older report can't put it back (`app.adapters.driver_index`).
2. **The index sweep, in Redis.** Every index entry whose last-seen score is older than the same
   cutoff is dropped, in atomic script batches (`DriverIndexReader.prune`): a report landing
   meanwhile is either fresh already (not picked) or lands after (indexed again). That also clears
   what step 1 cannot know about: a busy driver's leftover entry, a removal lost to a Redis blip.
   It depends on nothing the transaction writes, so it runs at once.

A driver taken offline in step 1 is also a `map:driver` {online: false} for every watched live map
holding its last position (after commit, one publish for the run), so an admin's map drops it.

Each run touches at most `limit` drivers per step (and per vehicle type in the sweep); a backlog
takes several runs. Not touched: drivers on a ride (the ride flow owns them; dispatch skips them
anyway) and online drivers who never reported a position (nothing to age them by; never indexed).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.adapters.driver_index import version_at
from app.adapters.watched_rooms import WatchedRooms
from app.logging import get_logger
from app.services import live_map
from app.settings import DispatchSettings
from models import VehicleType

log = get_logger("drivers")

#: Drivers taken offline (and index entries swept, per vehicle type) per run at most.
PRUNE_LIMIT = 2_000

_TAKE_OFFLINE = text("""
WITH vanished AS (
    SELECT user_id FROM drivers
    WHERE availability = 'online' AND active_ride_id IS NULL AND last_seen_at < :cutoff
    ORDER BY last_seen_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE drivers d SET availability = 'offline'
FROM vanished v
WHERE d.user_id = v.user_id
RETURNING d.user_id, d.vehicle_type, clock_timestamp(), d.last_lat, d.last_lng
""")


class StaleDriverIndex(Protocol):
    """What the prune needs of the index (`app.adapters.driver_index.DriverIndexReader`)."""

    def remove(self, driver_id: uuid.UUID, vehicle_type: str, *, version: int | None = None) -> bool: ...

    def prune(self, vehicle_types: Iterable[str], seen_before: float, *, limit: int | None = None) -> int: ...


class MapEmitter(Protocol):
    """What the prune needs of the publisher (`app.adapters.realtime.Publisher`)."""

    def watched_rooms(self) -> WatchedRooms: ...

    def emit_many(self, events: list[tuple[str, dict[str, Any], str]]) -> None: ...


@dataclass(frozen=True)
class PruneReport:
    #: Online drivers set offline in PostgreSQL.
    taken_offline: list[uuid.UUID]
    #: Index entries dropped by the sweep.
    swept: int


def prune_stale(session: Session, index: StaleDriverIndex, settings: DispatchSettings, *, now: datetime,
                after_commit: Callable[[Callable[[], Any]], None], publisher: MapEmitter | None = None,
                limit: int = PRUNE_LIMIT) -> PruneReport:
    """Take offline, and out of the index, drivers not heard from for `driver_prune_after_s`."""
    cutoff = now - timedelta(seconds=settings.driver_prune_after_s)
    rows = session.execute(_TAKE_OFFLINE, {"cutoff": cutoff, "limit": limit}).all()
    for driver_id, vehicle_type, clock, _, _ in rows:
        after_commit(functools.partial(index.remove, driver_id, str(vehicle_type), version=version_at(clock)))
    if rows and publisher is not None:
        after_commit(functools.partial(_left_the_maps, publisher, [(r[0], r[3], r[4], r[2]) for r in rows]))
    swept = index.prune([v.value for v in VehicleType], cutoff.timestamp(), limit=limit)
    taken_offline = [row[0] for row in rows]
    if taken_offline or swept:
        log.info("drivers.pruned_stale", taken_offline=len(taken_offline), swept=swept,
                 driver_ids=[str(d) for d in taken_offline[:50]])
    return PruneReport(taken_offline=taken_offline, swept=swept)


def _left_the_maps(publisher: MapEmitter,
                   drivers: list[tuple[uuid.UUID, float | None, float | None, datetime]]) -> None:
    watched = publisher.watched_rooms()
    events = [event for driver_id, lat, lng, at in drivers
              for event in live_map.driver_emits(watched, driver_id, lat, lng, online=False, at=at)]
    if events:
        publisher.emit_many(events)
