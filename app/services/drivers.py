"""Drivers' availability and positions: the `drivers` row is the truth, the GEO index follows it.

- `update_location` stores the position on the row whatever the availability (one UPDATE). After
  commit the driver is indexed if it may be offered rides (online, active, not busy on a ride) and
  taken out if it is online but busy; a driver on a ride has its position streamed to the ride's
  room (`driver:location_update`).
- `go_online` needs an active account; the driver is indexed at once if its last position is
  fresh, otherwise with its next report. `go_offline` takes it out. Suspension goes offline too.

Each index write carries the database clock read while the driver's row is locked, so racing
after-commit writes end as the commits did (`app.adapters.driver_index`). The invariant that makes
the row alone decide: availability is `online` only for an active account (`go_online` checks it
under the lock; suspension sets `offline` under the same lock).

An online driver's report, going online and going offline are also `map:driver` events for the
admins watching a region that holds its position (`app.services.live_map`; nothing when none).
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import Protocol

from sqlalchemy import func, select, update

from app.adapters.driver_index import DriverIndex, version_at
from app.db import AsyncUnitOfWork
from app.errors import AccountDeactivated, NotFound
from app.keys import ride_room
from app.logging import get_logger
from app.services import live_map
from app.services.live_map import MapPublisher
from app.timestamps import rfc3339
from models import Driver, DriverAvailability, User

log = get_logger("drivers")


class RidePublisher(MapPublisher, Protocol):
    """Emits an event to a room after commit (`app.adapters.realtime.AsyncPublisher`)."""


async def update_location(uow: AsyncUnitOfWork, index: DriverIndex, driver_id: uuid.UUID, lat: float,
                          lng: float, heading: float | None = None, speed_kph: float | None = None, *,
                          publisher: RidePublisher) -> None:
    """Store the driver's position; index it or stream it to its ride after commit."""
    row = (await uow.session.execute(
        update(Driver)
        .where(Driver.user_id == driver_id, User.id == Driver.user_id)
        .values(last_lat=lat, last_lng=lng, last_heading=heading, last_speed_kph=speed_kph,
                last_seen_at=func.clock_timestamp())
        .returning(Driver.vehicle_type, Driver.availability, Driver.active_ride_id, User.is_active,
                   Driver.last_seen_at, func.clock_timestamp())
        .execution_options(synchronize_session=False)
    )).one_or_none()
    if row is None:
        raise NotFound("No driver has this id.")
    vehicle_type, availability, ride_id, is_active, seen_at, clock = row
    if not is_active:
        raise AccountDeactivated()
    version = version_at(clock)
    if availability == DriverAvailability.ONLINE:
        if ride_id is None:
            uow.after_commit(functools.partial(index.place, driver_id, vehicle_type.value, lat, lng,
                                               seen_at.timestamp(), version=version))
        else:
            uow.after_commit(functools.partial(index.remove, driver_id, vehicle_type.value, version=version))
        uow.after_commit(functools.partial(live_map.driver_seen, publisher, driver_id, lat, lng, online=True,
                                           at=seen_at))
    if ride_id is not None:
        payload = {"rideId": str(ride_id), "driverId": str(driver_id), "lat": lat, "lng": lng,
                   "at": rfc3339(seen_at)}
        uow.after_commit(functools.partial(publisher.emit, "driver:location_update", payload,
                                           ride_room(ride_id)))


async def go_online(uow: AsyncUnitOfWork, index: DriverIndex, driver_id: uuid.UUID, *,
                    stale_after_s: float, publisher: MapPublisher | None = None) -> None:
    """Make the driver available; indexed now if its last position is younger than `stale_after_s`."""
    # Both rows locked: a suspension committing meanwhile is seen here, not overwritten.
    is_active = await uow.session.scalar(
        select(User.is_active).join(Driver, Driver.user_id == User.id).where(User.id == driver_id)
        .with_for_update()
    )
    if is_active is None:
        raise NotFound("No driver has this id.")
    if not is_active:
        raise AccountDeactivated()
    vehicle_type, ride_id, lat, lng, seen_at, clock = (await uow.session.execute(
        update(Driver).where(Driver.user_id == driver_id)
        .values(availability=DriverAvailability.ONLINE)
        .returning(Driver.vehicle_type, Driver.active_ride_id, Driver.last_lat, Driver.last_lng,
                   Driver.last_seen_at, func.clock_timestamp())
        .execution_options(synchronize_session=False)
    )).one()
    fresh = (lat is not None and lng is not None and seen_at is not None
             and clock - seen_at <= timedelta(seconds=stale_after_s))
    if fresh and ride_id is None:
        uow.after_commit(functools.partial(index.place, driver_id, vehicle_type.value, lat, lng,
                                           seen_at.timestamp(), version=version_at(clock)))
    if publisher is not None:
        uow.after_commit(functools.partial(live_map.driver_seen, publisher, driver_id, lat, lng, online=True,
                                           at=clock))
    log.info("drivers.went_online", driver_id=str(driver_id), indexed=bool(fresh and ride_id is None))


async def go_offline(uow: AsyncUnitOfWork, index: DriverIndex, driver_id: uuid.UUID, *,
                     publisher: MapPublisher | None = None) -> None:
    """Make the driver unavailable: it is offered no ride from the commit on."""
    row = (await uow.session.execute(
        update(Driver).where(Driver.user_id == driver_id)
        .values(availability=DriverAvailability.OFFLINE)
        .returning(Driver.vehicle_type, func.clock_timestamp(), Driver.last_lat, Driver.last_lng)
        .execution_options(synchronize_session=False)
    )).one_or_none()
    if row is None:
        raise NotFound("No driver has this id.")
    vehicle_type, clock, lat, lng = row
    uow.after_commit(functools.partial(index.remove, driver_id, vehicle_type.value,
                                       version=version_at(clock)))
    if publisher is not None:
        uow.after_commit(functools.partial(live_map.driver_seen, publisher, driver_id, lat, lng, online=False,
                                           at=clock))
    log.info("drivers.went_offline", driver_id=str(driver_id))
