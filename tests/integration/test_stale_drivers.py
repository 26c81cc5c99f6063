"""`drivers.prune_stale` (`app/services/stale_drivers.py`) on the run's real PostgreSQL and Redis.

What a user notices: a driver whose app vanished while online goes offline and dispatch no longer
finds it, even after its app sends a position again; a driver who reported meanwhile is untouched.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.driver_index import VERSION_HORIZON_S, DriverIndexReader, version_at, version_of
from app.keys import RedisKeys
from app.redis_conn import create_sync_redis
from app.services import dispatch, stale_drivers
from app.settings import Settings, get_settings
from models import Driver, DriverAvailability, Region, Ride, RideStatus, Role, User, VehicleType
from tests.integration.conftest import Accounts, Client, bearer
from tests.integration.rides_support import PICKUP, offset_km
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    clock_tick,
    db_fixture,
    drain,
    failed_jobs,
    start_worker_fixture,
)

VAN = "van"
#: Long enough ago to be pruned with the default DRIVER_PRUNE_AFTER (15 min).
VANISHED_S = 20 * 60


@dataclasses.dataclass
class Drivers:
    db: sessionmaker[Session]
    client: redis.Redis
    keys: RedisKeys
    index: DriverIndexReader
    settings: Settings

    def add(self, *, seen_ago_s: float | None, online: bool = True, busy: bool = False,
            indexed: bool = True, vehicle: str = VAN, km_east: float = 1.0) -> uuid.UUID:
        """A driver whose last report was `seen_ago_s` ago (None: never), indexed as it was then."""
        driver_id = uuid.uuid4()
        lat, lng = offset_km(PICKUP, km_east)
        seen = None if seen_ago_s is None else datetime.now(UTC) - timedelta(seconds=seen_ago_s)
        with self.db.begin() as session:
            session.add(User(id=driver_id, email=f"{driver_id}@example.com", password_hash="x",
                             full_name="A driver", phone="+491701234567", role=Role.DRIVER))
            session.flush()
            availability = DriverAvailability.ONLINE if online else DriverAvailability.OFFLINE
            session.add(Driver(user_id=driver_id, vehicle_type=VehicleType(vehicle),
                               availability=availability, active_ride_id=uuid.uuid4() if busy else None,
                               last_lat=lat if seen else None, last_lng=lng if seen else None,
                               last_seen_at=seen))
        if indexed and seen is not None:
            self.index.place(driver_id, vehicle, lat, lng, seen.timestamp())
        return driver_id

    def prune(self, **kwargs: Any) -> stale_drivers.PruneReport:
        """One run, as the job runs it: the service in a transaction, its after-commit actions after."""
        later: list[Callable[[], Any]] = []
        with self.db.begin() as session:
            report = stale_drivers.prune_stale(session, self.index, self.settings.dispatch,
                                               now=datetime.now(UTC), after_commit=later.append, **kwargs)
        for action in later:
            action()
        return report

    def availability(self, driver_id: uuid.UUID) -> DriverAvailability:
        with self.db() as session:
            return session.get_one(Driver, driver_id).availability

    def indexed(self, driver_id: uuid.UUID, vehicle: str = VAN) -> bool:
        in_geo = self.client.zscore(self.keys.driver_geo(vehicle), str(driver_id)) is not None
        in_seen = self.client.zscore(self.keys.driver_seen(vehicle), str(driver_id)) is not None
        assert in_geo == in_seen, "position and last-seen time out of step"
        return in_geo

    def found_by_any_search(self) -> list[uuid.UUID]:
        """Whom a search that ignores staleness altogether finds near the pickup."""
        return [d for d, _ in self.index.nearby(VAN, PICKUP[0], PICKUP[1], 20.0, limit=100, seen_after=0.0)]


@pytest.fixture
def drivers(clean: None, db: sessionmaker[Session], settings: Settings) -> Iterator[Drivers]:
    client: redis.Redis = create_sync_redis(settings.redis)
    keys = RedisKeys(settings.redis)
    yield Drivers(db, client, keys, DriverIndexReader(client, keys), settings)
    client.close()


def test_a_driver_vanished_while_online_goes_offline_and_out_of_the_index(drivers: Drivers) -> None:
    # Given an online driver silent for 20 minutes, one that just reported, one silent for 5
    # minutes (stale for dispatch, not yet gone), and one that never reported a position
    vanished = drivers.add(seen_ago_s=VANISHED_S)
    fresh = drivers.add(seen_ago_s=0)
    quiet = drivers.add(seen_ago_s=5 * 60)
    never_reported = drivers.add(seen_ago_s=None)

    # When the prune runs
    report = drivers.prune()

    # Then only the vanished one is offline and out of the index
    assert report.taken_offline == [vanished]
    assert drivers.availability(vanished) == DriverAvailability.OFFLINE
    assert not drivers.indexed(vanished)
    for kept in (fresh, quiet, never_reported):
        assert drivers.availability(kept) == DriverAvailability.ONLINE
    assert drivers.indexed(fresh) and drivers.indexed(quiet)
    assert sorted(drivers.found_by_any_search()) == sorted([fresh, quiet])

    # When it runs again, nothing more changes
    assert drivers.prune() == stale_drivers.PruneReport(taken_offline=[], swept=0)


def test_index_leftovers_are_swept_but_a_busy_driver_stays_online(drivers: Drivers) -> None:
    # Given stale index entries of an offline driver (its removal was lost), of a driver busy on a
    # ride, and of a car driver
    offline = drivers.add(seen_ago_s=VANISHED_S, online=False)
    busy = drivers.add(seen_ago_s=VANISHED_S, busy=True)
    car = drivers.add(seen_ago_s=VANISHED_S, vehicle="car")

    # When the prune runs
    report = drivers.prune()

    # Then every stale entry is gone from the index, whatever the vehicle
    assert report.swept == 3
    assert not drivers.indexed(offline)
    assert not drivers.indexed(busy)
    assert not drivers.indexed(car, "car")
    # And the ride flow keeps the busy driver: still online; the car driver went offline
    assert drivers.availability(busy) == DriverAvailability.ONLINE
    assert report.taken_offline == [car]


def test_a_driver_whose_report_is_being_written_during_the_prune_is_kept(
    drivers: Drivers, db: sessionmaker[Session]
) -> None:
    # Given two drivers silent for 20 minutes
    vanished = drivers.add(seen_ago_s=VANISHED_S)
    back = drivers.add(seen_ago_s=VANISHED_S, km_east=2.0)
    lat, lng = offset_km(PICKUP, 2.0)

    # When one of them reports again while the prune runs: its row is updated (as
    # `update_location` does) but not yet committed, and its index write comes after its commit
    with db() as reporter:
        clock = reporter.execute(
            update(Driver).where(Driver.user_id == back)
            .values(last_seen_at=func.clock_timestamp(), last_lat=lat, last_lng=lng)
            .returning(func.clock_timestamp())
        ).scalar_one()
        report = drivers.prune()
        reporter.commit()
    placed = drivers.index.place(back, VAN, lat, lng, time.time(), version=version_at(clock))

    # Then the vanished one is pruned and the one that reported is online and found again
    assert report.taken_offline == [vanished]
    assert drivers.availability(back) == DriverAvailability.ONLINE
    assert placed
    assert drivers.found_by_any_search() == [back]


def test_a_report_that_landed_just_before_the_sweep_is_kept(drivers: Drivers) -> None:
    # Given a driver silent for 20 minutes whose new report reached the index just now
    driver = drivers.add(seen_ago_s=VANISHED_S)
    with drivers.db.begin() as session:
        session.execute(update(Driver).where(Driver.user_id == driver).values(last_seen_at=func.now()))
    lat, lng = offset_km(PICKUP, 1.0)
    assert drivers.index.place(driver, VAN, lat, lng, time.time(), version=version_of(time.time()))

    # When the prune runs
    report = drivers.prune()

    # Then it is neither offline nor out of the index
    assert report == stale_drivers.PruneReport(taken_offline=[], swept=0)
    assert drivers.indexed(driver)
    assert drivers.availability(driver) == DriverAvailability.ONLINE


def test_a_late_index_write_from_before_the_prune_does_not_bring_the_driver_back(drivers: Drivers) -> None:
    # Given a vanished driver whose last report's index write is still on its way
    driver = drivers.add(seen_ago_s=VANISHED_S)
    before_prune = version_of(time.time())

    # When the prune takes it out, and then that older write lands
    drivers.prune()
    lat, lng = offset_km(PICKUP, 1.0)
    placed = drivers.index.place(driver, VAN, lat, lng, time.time(), version=before_prune)

    # Then the write is refused: the driver stays out
    assert not placed
    assert not drivers.indexed(driver)


def test_a_backlog_larger_than_the_bound_is_pruned_over_several_runs(drivers: Drivers) -> None:
    # Given five vanished drivers and a prune of at most two per run
    vanished = {drivers.add(seen_ago_s=VANISHED_S + n) for n in range(5)}

    # When it runs three times
    runs = [drivers.prune(limit=2) for _ in range(3)]

    # Then each run took at most two, oldest first, and after the third none is left
    assert [len(r.taken_offline) for r in runs] == [2, 2, 1]
    assert [r.swept for r in runs] == [2, 2, 1]
    assert {d for r in runs for d in r.taken_offline} == vanished
    assert drivers.found_by_any_search() == []


def test_the_sweep_trims_versions_older_than_the_horizon(drivers: Drivers) -> None:
    # Given the versions left behind by a driver swept more than the horizon ago and by one
    # swept a minute ago (a sweep keeps them, so a late older write can't undo it)
    gone, recent = uuid.uuid4(), uuid.uuid4()
    versions = drivers.keys.driver_index_versions(VAN)
    drivers.client.zadd(versions, {str(gone): version_of(time.time() - VERSION_HORIZON_S - 60),
                                   str(recent): version_of(time.time() - 60)})

    # When the prune runs
    drivers.prune()

    # Then the old version is gone and the recent one kept
    assert drivers.client.zscore(versions, str(gone)) is None
    assert drivers.client.zscore(versions, str(recent)) is not None


def test_dispatch_no_longer_offers_a_pruned_driver(drivers: Drivers, settings: Settings) -> None:
    # Given a van silent for 20 minutes, a dispatch that would still count it (an hour's stale
    # window), and a ride next to it
    driver = drivers.add(seen_ago_s=VANISHED_S)
    patient = dataclasses.replace(settings.dispatch, driver_stale_after_s=3600)
    customer = uuid.uuid4()
    with drivers.db.begin() as session:
        session.add(User(id=customer, email=f"{customer}@example.com", password_hash="x", full_name="C",
                         phone="+491701234567", role=Role.CUSTOMER))
        session.add(Region(code="BER", name="Berlin", currency="EUR", commission_rate=Decimal("0.15")))
    rides = [_ride(drivers.db, customer) for _ in range(2)]
    assert _offered(drivers.db, drivers.index, patient, rides[0]) == [driver]

    # When the prune runs
    drivers.prune()

    # Then the next ride's first round offers it nothing
    assert _offered(drivers.db, drivers.index, patient, rides[1]) == []


def _ride(db: sessionmaker[Session], customer: uuid.UUID) -> uuid.UUID:
    ride_id = uuid.uuid4()
    with db.begin() as session:
        session.add(Ride(id=ride_id, customer_id=customer, region_code="BER", vehicle_type=VehicleType.VAN,
                         payment_method="cash", pickup_lat=PICKUP[0], pickup_lng=PICKUP[1],
                         dropoff_lat=PICKUP[0] + 0.02, dropoff_lng=PICKUP[1], distance_km=2.2,
                         status=RideStatus.PENDING_BIDS))
    return ride_id


def _offered(db: sessionmaker[Session], index: DriverIndexReader, settings: Any,
             ride_id: uuid.UUID) -> list[uuid.UUID]:
    with db.begin() as session:
        result = dispatch.step(session, index, settings, ride_id, 0, after_commit=lambda action: None,
                               emit=lambda *args: None)
    return list(result.offered)


def test_the_clock_sends_the_prune_and_a_worker_runs_it(
    drivers: Drivers, start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given a vanished driver and a fresh one, and a worker
    vanished = drivers.add(seen_ago_s=VANISHED_S)
    fresh = drivers.add(seen_ago_s=0)
    start_worker(relay=get_settings())

    # When the clock sends the prune
    clock_tick(db, "drivers.prune_stale")

    # Then the vanished driver is offline and out of the index, the fresh one untouched
    assert drivers.availability(vanished) == DriverAvailability.OFFLINE
    assert not drivers.indexed(vanished)
    assert drivers.indexed(fresh)
    assert failed_jobs(db) == []


async def test_a_pruned_driver_reporting_again_is_offered_nothing_until_it_goes_online(
    api: Client, accounts: Accounts, drivers: Drivers
) -> None:
    # Given an online driver whose app went quiet 20 minutes ago
    session = await accounts.register("driver")
    driver_id = uuid.UUID(session["user"]["id"])
    headers = bearer(session["accessToken"])
    point = {"lat": PICKUP[0], "lng": PICKUP[1]}
    assert (await api.post("/api/v1/drivers/me/online", headers=headers)).status_code == 204
    assert (await api.put("/api/v1/drivers/me/location", json=point, headers=headers)).status_code == 204
    long_ago = datetime.now(UTC) - timedelta(seconds=VANISHED_S)
    with drivers.db.begin() as db_session:
        db_session.execute(update(Driver).where(Driver.user_id == driver_id).values(last_seen_at=long_ago))
    drivers.index.place(driver_id, VAN, PICKUP[0], PICKUP[1], long_ago.timestamp(),
                        version=version_of(time.time()))

    # When the prune runs and then the app comes back and reports its position
    drivers.prune()
    assert (await api.put("/api/v1/drivers/me/location", json=point, headers=headers)).status_code == 204

    # Then the position is stored but dispatch finds nobody
    with drivers.db() as db_session:
        row = db_session.scalars(select(Driver).where(Driver.user_id == driver_id)).one()
        assert row.availability == DriverAvailability.OFFLINE
        assert row.last_seen_at is not None and row.last_seen_at > long_ago
    assert drivers.found_by_any_search() == []

    # When the driver goes online again, it is found at once
    assert (await api.post("/api/v1/drivers/me/online", headers=headers)).status_code == 204
    assert drivers.found_by_any_search() == [driver_id]
