"""The operations console's live map: a region's open rides and online drivers, and their events.

- `map_view`: `GET /admin/map?region=CODE` — the region's rides not final (pickup, dropoff,
  status, driver) and the online drivers inside its bounds with their last positions.
- A region's **bounds** are not configured (a region is a market: currency and commission); they
  are the box around the pickups and drop-offs of its rides of the last `BOUNDS_DAYS` days,
  widened by `PAD_FRACTION` of each side (at least `MIN_PAD_DEG`). A region with no ride in that
  time has no bounds (null), and its map shows no driver.
- A driver's region is the watched region whose bounds hold its position (drivers belong to no
  region), so a driver near two overlapping regions is on both maps.
- Events (emitted after commit, only while someone watches the room — `app.adapters.watched_rooms`):
  `map:ride` {rideId, region, status, pickup, dropoff, driverId, at} on a ride's creation and every
  status change, to `map:{region}`; `map:driver` {driverId, region, lat, lng, online, at} on a
  location report and on going online or offline.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.adapters.watched_rooms import Bounds, WatchedRooms
from app.errors import NotFound
from app.keys import map_room
from app.timestamps import rfc3339
from models import Driver, DriverAvailability, Region, Ride
from models.ride_states import FINAL

#: The rides that draw a region's bounds: those created in the last this many days.
BOUNDS_DAYS: Final = 30
PAD_FRACTION: Final = 0.1
MIN_PAD_DEG: Final = 0.05
#: At most this many rides and drivers on one map (the most recently changed).
MAP_LIMIT: Final = 2000


class MapPublisher(Protocol):
    """`AsyncPublisher`: emits, and knows which watched-only rooms someone is in."""

    async def emit(self, event: str, payload: dict[str, Any], room: str | list[str]) -> None: ...

    async def watched_rooms(self) -> WatchedRooms: ...


def _place(lat: float, lng: float, address: str | None = None) -> dict[str, Any]:
    return {"lat": lat, "lng": lng, "address": address}


def ride_event(ride: Ride, *, at: datetime | None = None) -> dict[str, Any]:
    """The `map:ride` payload of a ride as it stands (after a move: the status it moved to)."""
    return {"rideId": str(ride.id), "region": ride.region_code, "status": ride.status.value,
            "pickup": _place(ride.pickup_lat, ride.pickup_lng, ride.pickup_address),
            "dropoff": _place(ride.dropoff_lat, ride.dropoff_lng, ride.dropoff_address),
            "driverId": str(ride.driver_id) if ride.driver_id else None,
            "at": rfc3339(at or ride.updated_at)}


def ride_emit(ride: Ride, *, at: datetime | None = None) -> tuple[str, dict[str, Any], str]:
    """`(event, payload, room)` of the ride's `map:ride`, for the caller's emit."""
    return "map:ride", ride_event(ride, at=at), map_room(ride.region_code)


def driver_emits(watched: WatchedRooms, driver_id: uuid.UUID, lat: float | None, lng: float | None, *,
                 online: bool, at: datetime) -> list[tuple[str, dict[str, Any], str]]:
    """`(event, payload, room)` of the `map:driver` for every watched region holding the driver."""
    if lat is None or lng is None:
        return []
    return [("map:driver", {"driverId": str(driver_id), "region": region, "lat": lat, "lng": lng,
                            "online": online, "at": rfc3339(at)}, map_room(region))
            for region in watched.regions_holding(lat, lng)]


async def driver_seen(publisher: MapPublisher, driver_id: uuid.UUID, lat: float | None, lng: float | None,
                      *, online: bool, at: datetime) -> None:
    """`map:driver` to every watched region whose bounds hold the driver (nothing when none)."""
    if lat is None or lng is None:
        return
    for event, payload, room in driver_emits(await publisher.watched_rooms(), driver_id, lat, lng,
                                             online=online, at=at):
        await publisher.emit(event, payload, room)


async def region_bounds(session: AsyncSession, region: str, *, now: datetime | None = None) -> Bounds | None:
    """The box around the region's recent rides, padded (None without one)."""
    since = (now or datetime.now(UTC)) - timedelta(days=BOUNDS_DAYS)
    row = (await session.execute(
        select(func.least(func.min(Ride.pickup_lat), func.min(Ride.dropoff_lat)),
               func.least(func.min(Ride.pickup_lng), func.min(Ride.dropoff_lng)),
               func.greatest(func.max(Ride.pickup_lat), func.max(Ride.dropoff_lat)),
               func.greatest(func.max(Ride.pickup_lng), func.max(Ride.dropoff_lng)))
        .where(Ride.region_code == region, Ride.created_at >= since)
    )).one()
    if row[0] is None:
        return None
    min_lat, min_lng, max_lat, max_lng = (float(v) for v in row)
    pad_lat = max(MIN_PAD_DEG, (max_lat - min_lat) * PAD_FRACTION)
    pad_lng = max(MIN_PAD_DEG, (max_lng - min_lng) * PAD_FRACTION)
    return Bounds(max(-90.0, min_lat - pad_lat), max(-180.0, min_lng - pad_lng),
                  min(90.0, max_lat + pad_lat), min(180.0, max_lng + pad_lng))


async def region_exists(session: AsyncSession, region: str) -> bool:
    return await session.scalar(select(Region.code).where(Region.code == region)) is not None


async def map_view(session: AsyncSession, region: str) -> dict[str, Any]:
    """`GET /admin/map` (module docstring); `NotFound` for an unknown region."""
    if not await region_exists(session, region):
        raise NotFound("No region has this code.")
    bounds = await region_bounds(session, region)
    rides = (await session.scalars(
        select(Ride).where(Ride.region_code == region, Ride.status.not_in(list(FINAL)))
        .order_by(Ride.updated_at.desc()).limit(MAP_LIMIT))).all()
    drivers: list[dict[str, Any]] = []
    if bounds is not None:
        rows = (await session.execute(
            select(Driver.user_id, Driver.last_lat, Driver.last_lng, Driver.vehicle_type, Driver.last_seen_at)
            .where(Driver.availability == DriverAvailability.ONLINE,
                   Driver.last_lat.between(bounds.min_lat, bounds.max_lat),
                   Driver.last_lng.between(bounds.min_lng, bounds.max_lng))
            .order_by(Driver.last_seen_at.desc()).limit(MAP_LIMIT))).all()
        drivers = [{"driverId": str(user_id), "lat": lat, "lng": lng, "online": True,
                    "vehicleType": vehicle.value, "at": rfc3339(seen) if seen else None}
                   for user_id, lat, lng, vehicle, seen in rows]
    return {"region": region, "bounds": bounds.as_json() if bounds else None,
            "rides": [{"rideId": str(r.id), "status": r.status.value,
                       "pickup": _place(r.pickup_lat, r.pickup_lng, r.pickup_address),
                       "dropoff": _place(r.dropoff_lat, r.dropoff_lng, r.dropoff_address),
                       "driverId": str(r.driver_id) if r.driver_id else None,
                       "customerId": str(r.customer_id), "updatedAt": rfc3339(r.updated_at)} for r in rides],
            "drivers": drivers}
