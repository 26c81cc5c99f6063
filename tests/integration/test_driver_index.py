"""The Redis GEO index of live drivers (`app/adapters/driver_index.py`) against a real Redis.

Positions are laid out at known distances with `offset` (Redis's own earth radius, so the
distances it reports are the ones asked for); the probe-first search is checked against one
wide GEOSEARCH over a dense random cloud.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator

import pytest
import redis
import redis.asyncio as aredis

from app.adapters.driver_index import DriverIndex, DriverIndexReader, version_of
from app.keys import RedisKeys
from app.redis_conn import create_async_redis, create_sync_redis
from app.settings import Settings

#: The radius Redis computes GEO distances with (geohash_helper.c).
EARTH_RADIUS_KM = 6372.7976
ORIGIN = (52.5200, 13.4050)
VAN = "van"
STALE_AFTER_S = 120

Point = tuple[float, float]


def offset(origin: Point, *, east_km: float = 0.0, north_km: float = 0.0) -> Point:
    """The point `east_km` east and `north_km` north of `origin` (lat, lng)."""
    lat, lng = origin
    return (lat + math.degrees(north_km / EARTH_RADIUS_KM),
            lng + math.degrees(east_km / (EARTH_RADIUS_KM * math.cos(math.radians(lat)))))


@pytest.fixture
def client(clean: None, settings: Settings) -> Iterator[redis.Redis]:
    made = create_sync_redis(settings.redis)
    yield made
    made.close()


@pytest.fixture
def keys(settings: Settings) -> RedisKeys:
    return RedisKeys(settings.redis)


@pytest.fixture
def reader(client: redis.Redis, keys: RedisKeys) -> DriverIndexReader:
    return DriverIndexReader(client, keys)


@pytest.fixture
async def index(clean: None, settings: Settings, keys: RedisKeys) -> AsyncIterator[DriverIndex]:
    made: aredis.Redis = create_async_redis(settings.redis)
    yield DriverIndex(made, keys)
    await made.aclose()


async def place_at(index: DriverIndex, point: Point, *, seen_at: float | None = None,
                   vehicle_type: str = VAN) -> uuid.UUID:
    driver_id = uuid.uuid4()
    seen_at = time.time() if seen_at is None else seen_at
    await index.place(driver_id, vehicle_type, point[0], point[1], seen_at)
    return driver_id


def search(reader: DriverIndexReader, center: Point, radius_km: float, *, limit: int = 100,
           exclude: Collection[uuid.UUID] = frozenset()) -> list[tuple[uuid.UUID, float]]:
    return reader.nearby(VAN, center[0], center[1], radius_km, limit=limit,
                         seen_after=time.time() - STALE_AFTER_S, exclude=exclude)


def indexed(client: redis.Redis, keys: RedisKeys, driver_id: uuid.UUID) -> bool:
    """Whether the driver is in the index; its position and last-seen time always go together."""
    in_geo = client.zscore(keys.driver_geo(VAN), str(driver_id)) is not None
    in_seen = client.zscore(keys.driver_seen(VAN), str(driver_id)) is not None
    assert in_geo == in_seen, "position and last-seen time out of step"
    return in_geo


async def test_nearby_drivers_come_nearest_first_with_their_distance_up_to_the_limit(
    index: DriverIndex, reader: DriverIndexReader
) -> None:
    # Given four vans 3, 0.5, 2 and 1 km away in different directions
    far = await place_at(index, offset(ORIGIN, east_km=3))
    nearest = await place_at(index, offset(ORIGIN, north_km=-0.5))
    third = await place_at(index, offset(ORIGIN, east_km=-2))
    second = await place_at(index, offset(ORIGIN, north_km=1))

    # When dispatch asks for the three nearest within 5 km
    found = search(reader, ORIGIN, 5, limit=3)

    # Then it gets the 0.5, 1 and 2 km vans, in that order, with their distances
    assert [driver for driver, _ in found] == [nearest, second, third]
    assert [km for _, km in found] == pytest.approx([0.5, 1.0, 2.0], abs=0.005)
    # And with room for all, the 3 km van comes last
    assert [driver for driver, _ in search(reader, ORIGIN, 5, limit=10)][-1] == far


async def test_nearby_respects_the_radius_and_the_vehicle_type(
    index: DriverIndex, reader: DriverIndexReader
) -> None:
    # Given vans 0.9, 2.9, 4.9, 5.1 and 9 km away, and a car right at the pickup
    vans = [await place_at(index, offset(ORIGIN, east_km=km)) for km in (0.9, 2.9, 4.9, 5.1, 9.0)]
    await place_at(index, ORIGIN, vehicle_type="car")

    # When vans are looked for within 1, 3, 5 and 10 km
    # Then only the vans inside each radius are found, and never the car
    for radius, inside in ((1, 1), (3, 2), (5, 3), (10, 5)):
        assert [driver for driver, _ in search(reader, ORIGIN, radius)] == vans[:inside], radius
    # And a radius under the first probe's finds only what is inside it
    assert search(reader, ORIGIN, 0.5) == []


async def test_drivers_not_seen_lately_are_skipped_until_they_report_again(
    index: DriverIndex, reader: DriverIndexReader
) -> None:
    # Given a van that reported a second ago and one whose last report is five minutes old
    fresh = await place_at(index, offset(ORIGIN, east_km=1))
    quiet_point = offset(ORIGIN, east_km=0.5)
    quiet = await place_at(index, quiet_point, seen_at=time.time() - 300)

    # When dispatch looks for drivers seen in the last two minutes
    # Then only the fresh one is found, though the quiet one is nearer
    assert [driver for driver, _ in search(reader, ORIGIN, 5)] == [fresh]

    # When the quiet van reports again
    await index.place(quiet, VAN, quiet_point[0], quiet_point[1], time.time())

    # Then it is found again, first
    assert [driver for driver, _ in search(reader, ORIGIN, 5)] == [quiet, fresh]


async def test_excluded_drivers_are_left_out_and_the_next_nearest_take_their_place(
    index: DriverIndex, reader: DriverIndexReader
) -> None:
    # Given five vans 1..5 km away
    vans = [await place_at(index, offset(ORIGIN, north_km=km)) for km in (1, 2, 3, 4, 5)]

    # When the two nearest were offered already and dispatch wants two more
    found = search(reader, ORIGIN, 10, limit=2, exclude={vans[0], vans[1]})

    # Then it gets the 3 and 4 km vans
    assert [driver for driver, _ in found] == [vans[2], vans[3]]


async def test_a_crowd_of_quiet_or_excluded_drivers_at_the_pickup_does_not_hide_the_ones_behind_it(
    index: DriverIndex, reader: DriverIndexReader
) -> None:
    # Given 60 vans within 100 m of the pickup that went quiet, 30 more that were offered already,
    # and three fresh vans 0.5, 0.6 and 2 km away
    rng = random.Random(7)
    for _ in range(60):
        await place_at(index, offset(ORIGIN, east_km=rng.uniform(-0.1, 0.1)), seen_at=time.time() - 600)
    offered = {await place_at(index, offset(ORIGIN, north_km=rng.uniform(-0.1, 0.1))) for _ in range(30)}
    fresh = [await place_at(index, offset(ORIGIN, east_km=km)) for km in (0.5, 0.6, 2.0)]

    # When dispatch asks for the three nearest fresh vans not offered yet
    found = search(reader, ORIGIN, 5, limit=3, exclude=offered)

    # Then it gets the three behind the crowd
    assert [driver for driver, _ in found] == fresh


def one_wide_search(client: redis.Redis, keys: RedisKeys, center: Point, radius_km: float, *, limit: int,
                    seen: dict[str, float], seen_after: float,
                    exclude: Collection[uuid.UUID]) -> list[tuple[uuid.UUID, float]]:
    """What a single GEOSEARCH over the whole radius, filtered afterwards, answers."""
    hits: list[tuple[str, float]] = client.geosearch(  # type: ignore[assignment]
        keys.driver_geo(VAN), longitude=center[1], latitude=center[0], radius=radius_km, unit="km",
        sort="ASC", withdist=True,
    )
    excluded = {str(driver) for driver in exclude}
    kept = [(member, km) for member, km in hits if member not in excluded and seen[member] >= seen_after]
    return [(uuid.UUID(member), float(km)) for member, km in kept[:limit]]


def test_probing_a_small_radius_first_finds_the_same_drivers_as_one_wide_search(
    client: redis.Redis, keys: RedisKeys, reader: DriverIndexReader
) -> None:
    # Given 5,000 vans spread over a 12 x 12 km box (~35 per km²), a fifth of them not seen lately
    rng = random.Random(20261122)
    now = time.time()
    cloud = []
    for _ in range(5000):
        point = offset(ORIGIN, east_km=rng.uniform(-6, 6), north_km=rng.uniform(-6, 6))
        seen_at = now - (rng.uniform(200, 900) if rng.random() < 0.2 else rng.uniform(0, 60))
        cloud.append((uuid.uuid4(), point[0], point[1], seen_at))
    reader.place_many(VAN, cloud)
    assert client.zcard(keys.driver_geo(VAN)) == 5000
    ids = [driver for driver, *_ in cloud]
    seen = {str(driver): seen_at for driver, _, _, seen_at in cloud}

    # When dispatch searches from many pickups, for few and many drivers, near and far radii,
    # with some drivers excluded
    cases = [
        (ORIGIN, 5.0, 20, 0),         # answered by the first 1 km probe
        (ORIGIN, 5.0, 300, 40),       # needs wider probes
        (offset(ORIGIN, east_km=5.5, north_km=5.5), 5.0, 40, 10),  # a corner of the cloud
        (offset(ORIGIN, east_km=9, north_km=0), 5.0, 40, 0),       # outside it: widens to the end
        (ORIGIN, 0.4, 100, 5),        # a radius under the first probe
        (ORIGIN, 20.0, 5000, 100),    # more wanted than there are: everything fresh, in order
    ]
    for _ in range(24):
        center = offset(ORIGIN, east_km=rng.uniform(-7, 7), north_km=rng.uniform(-7, 7))
        cases.append((center, rng.choice([2.0, 5.0, 10.0]), rng.choice([1, 10, 40, 120]),
                      rng.choice([0, 5, 60])))
    for center, radius, limit, excluded in cases:
        exclude = set(rng.sample(ids, excluded))
        seen_after = now - STALE_AFTER_S
        probed = reader.nearby(VAN, center[0], center[1], radius, limit=limit, seen_after=seen_after,
                               exclude=exclude)

        # Then the probe-first search answers exactly what one wide search does
        wide = one_wide_search(client, keys, center, radius, limit=limit, seen=seen,
                               seen_after=seen_after, exclude=exclude)
        assert probed == wide, (center, radius, limit, excluded)
        assert all(driver not in exclude for driver, _ in probed)


async def test_a_late_write_never_undoes_a_newer_one(
    index: DriverIndex, client: redis.Redis, keys: RedisKeys
) -> None:
    # Given a driver indexed by a location update, then taken out by a later go-offline
    driver = uuid.uuid4()
    now = time.time()
    base = version_of(now)
    assert await index.place(driver, VAN, *ORIGIN, now, version=base)
    assert await index.remove(driver, VAN, version=base + 2_000)

    # When a location update committed between the two lands late
    late = await index.place(driver, VAN, *ORIGIN, now, version=base + 1_000)

    # Then it is dropped: the driver stays out
    assert late is False
    assert not indexed(client, keys, driver)

    # When the driver goes online again (a newer change)
    assert await index.place(driver, VAN, *ORIGIN, now, version=base + 3_000)

    # Then it is in, and an older removal landing late does not take it out
    assert await index.remove(driver, VAN, version=base + 2_500) is False
    assert indexed(client, keys, driver)


async def test_a_position_redis_cannot_hold_takes_the_driver_out(
    index: DriverIndex, client: redis.Redis, keys: RedisKeys
) -> None:
    # Given an indexed driver
    driver = await place_at(index, ORIGIN)

    # When it reports a position nearer the pole than Redis GEO can store
    await index.place(driver, VAN, 86.0, 10.0, time.time() + 1)

    # Then it is no longer in the index (and nothing failed)
    assert not indexed(client, keys, driver)


async def test_pruning_drops_drivers_not_seen_since_the_cutoff(
    index: DriverIndex, reader: DriverIndexReader, client: redis.Redis, keys: RedisKeys
) -> None:
    # Given a van and a car gone quiet an hour ago, and a van that just reported
    now = time.time()
    quiet_van = await place_at(index, ORIGIN, seen_at=now - 3600)
    quiet_car = await place_at(index, ORIGIN, seen_at=now - 3600, vehicle_type="car")
    fresh_van = await place_at(index, ORIGIN, seen_at=now)

    # When drivers not seen for ten minutes are pruned
    dropped = reader.prune([VAN, "car", "truck"], seen_before=now - 600)

    # Then the quiet ones are gone from both keys and the fresh one stays
    assert dropped == 2
    assert not indexed(client, keys, quiet_van)
    assert client.zscore(keys.driver_geo("car"), str(quiet_car)) is None
    assert indexed(client, keys, fresh_van)
