"""The live index of driver positions in Redis: where dispatch looks for the nearest drivers.

Key layout, one group of keys per vehicle type `{vt}` (`app.keys.RedisKeys`):

| key                            | type       | member → score                                        |
| ------------------------------ | ---------- | ----------------------------------------------------- |
| `{prefix}:geo:drivers:{vt}`    | GEO        | driver id → position (GEOADD / GEOSEARCH)             |
| `{prefix}:geo:seen:{vt}`       | sorted set | driver id → when that position was reported (epoch s) |
| `{prefix}:geo:versions:{vt}`   | sorted set | driver id → version of the last change applied (µs)   |

A driver is in the first two keys, together, while it may be offered rides: online, active (not
suspended), not busy on a ride, with a known position. PostgreSQL's `drivers` row is the truth;
the services write here after their commit (`app.services.drivers`).

**Order.** Every write carries a version (the database clock read while the driver's row is
locked) and a write older than the last one applied to that driver is dropped, atomically, in a
script. So when after-commit writes race (a position update landing after a later go-offline, from
another process), the index ends as the later commit left the row. A removal leaves its version
behind (trimmed after `VERSION_HORIZON_S`) so a late older placement can't undo it.

**Staleness.** An online driver whose app went quiet stays indexed with its last `seen` time;
`nearby(seen_after=...)` skips it and `prune` drops it (the clock's `drivers.prune_stale`, which
also sets it offline: `app.services.stale_drivers`). A Redis restarted empty loses the index:
online drivers come back with their next position report.

**Search.** `nearby` runs one script: `GEOSEARCH ... BYRADIUS r km ASC COUNT n WITHDIST` over a
small radius first (1 km, then 3 times wider up to the asked radius), filters by last-seen (`ZMSCORE`) and
the excluded ids, and widens only when too few drivers are left. Anything outside a probe's
radius is farther than everything inside it, so the nearest `limit` found inside are the nearest
overall; a probe costs Redis a fraction of one wide search (see PERFORMANCE-NOTES).

`DriverIndex` (redis.asyncio) serves the API and the socket server; `DriverIndexReader` (redis-py)
serves the workers and the CLI. Both use the same keys and scripts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio as aredis

from app.keys import RedisKeys
from app.logging import get_logger

log = get_logger("driver_index")

#: Redis GEO can't store positions nearer the poles than this.
GEO_MAX_LAT = 85.05112878
FIRST_PROBE_KM = 1.0
WIDEN_FACTOR = 3.0
#: Versions of removed drivers are kept this long: no after-commit write is ever later than that.
VERSION_HORIZON_S = 3600
PRUNE_BATCH = 500

# KEYS: geo, seen, versions. ARGV: id, lng, lat, seen_at, version.
_PLACE = """
local applied = redis.call('ZSCORE', KEYS[3], ARGV[1])
if applied and tonumber(applied) >= tonumber(ARGV[5]) then
  return 0
end
redis.call('GEOADD', KEYS[1], ARGV[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1
"""

# KEYS: geo, seen, versions. ARGV: id, version, trim versions older than this.
_REMOVE = """
local applied = redis.call('ZSCORE', KEYS[3], ARGV[1])
if applied and tonumber(applied) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
return 1
"""

# KEYS: geo, seen. ARGV: lng, lat, limit, seen_after, count, number of radii, radii..., excluded ids...
# Returns [id, distance_km, id, distance_km, ...], nearest first, at most `limit` pairs.
_NEARBY = """
local limit = tonumber(ARGV[3])
local seen_after = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local n_radii = tonumber(ARGV[6])
local excluded = {}
for i = 7 + n_radii, #ARGV do
  excluded[ARGV[i]] = true
end
local kept = {}
for r = 1, n_radii do
  while true do
    local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], ARGV[2],
                             'BYRADIUS', ARGV[6 + r], 'km', 'ASC', 'COUNT', count, 'WITHDIST')
    local ids, distances = {}, {}
    for _, hit in ipairs(found) do
      if not excluded[hit[1]] then
        ids[#ids + 1] = hit[1]
        distances[#distances + 1] = hit[2]
      end
    end
    kept = {}
    for first = 1, #ids, 500 do
      local last = math.min(first + 499, #ids)
      local seen = redis.call('ZMSCORE', KEYS[2], unpack(ids, first, last))
      for j = 1, last - first + 1 do
        if seen[j] and tonumber(seen[j]) >= seen_after then
          kept[#kept + 1] = ids[first + j - 1]
          kept[#kept + 1] = distances[first + j - 1]
          if #kept >= 2 * limit then
            return kept
          end
        end
      end
    end
    if #found < count then
      break
    end
    count = count * 2
  end
end
return kept
"""

# KEYS: geo, seen, versions. ARGV: seen before, batch size, trim versions older than this.
# Returns how many were dropped. One script: a report landing meanwhile is either already in
# `seen` (fresh, not picked) or lands after (indexed again), never lost between a read and a delete.
# The versions of dropped drivers stay (until the horizon), so a late older write can't undo a
# later removal; they are trimmed here too, so the versions set never grows without bound.
_PRUNE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #stale > 0 then
  redis.call('ZREM', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
return #stale
"""


@dataclass(frozen=True)
class NearbyQuery:
    """One search of `DriverIndexReader.nearby_many`: around a pickup, within a radius, minus some."""

    vehicle_type: str
    lat: float
    lng: float
    radius_km: float
    exclude: frozenset[uuid.UUID] = frozenset()


def probe_radii(radius_km: float) -> list[float]:
    """The radii searched in turn: 1 km, then 3 times wider while short of the radius, then the radius."""
    radii: list[float] = []
    probe = FIRST_PROBE_KM
    while probe < radius_km / 1.5:
        radii.append(probe)
        probe *= WIDEN_FACTOR
    radii.append(radius_km)
    return radii


def version_of(epoch_s: float) -> int:
    """A version (epoch microseconds) for a moment given in epoch seconds."""
    return round(epoch_s * 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_at(moment: datetime) -> int:
    """The version of a database clock reading: exact epoch microseconds."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def indexable(lat: float, lng: float) -> bool:
    """Whether Redis GEO can hold this position (it stops short of the poles)."""
    return -GEO_MAX_LAT <= lat <= GEO_MAX_LAT and -180.0 <= lng <= 180.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Layout:
    """The keys and script arguments both index classes share."""

    def __init__(self, keys: RedisKeys) -> None:
        self._keys = keys

    def _all_keys(self, vehicle_type: str) -> list[str]:
        return [self._keys.driver_geo(vehicle_type), self._keys.driver_seen(vehicle_type),
                self._keys.driver_index_versions(vehicle_type)]

    @staticmethod
    def _place_args(driver_id: uuid.UUID, lat: float, lng: float, seen_at: float,
                    version: int | None) -> list[Any]:
        return [str(driver_id), repr(float(lng)), repr(float(lat)), repr(float(seen_at)),
                version if version is not None else version_of(seen_at)]

    @staticmethod
    def _remove_args(driver_id: uuid.UUID, version: int | None) -> list[Any]:
        version = version if version is not None else version_of(time.time())
        return [str(driver_id), version, version - VERSION_HORIZON_S * 1_000_000]


class DriverIndex(_Layout):
    """Writes driver positions from the async web process (after commit)."""

    def __init__(self, client: aredis.Redis, keys: RedisKeys) -> None:
        super().__init__(keys)
        self._place = client.register_script(_PLACE)
        self._remove = client.register_script(_REMOVE)

    async def place(self, driver_id: uuid.UUID, vehicle_type: str, lat: float, lng: float, seen_at: float,
                    *, version: int | None = None) -> bool:
        """Index the driver at this position (seen at `seen_at`, epoch s); False if a newer write won.

        `version` orders racing writes (default: `seen_at` in µs). A position Redis GEO can't hold
        (beyond ±85.05°) takes the driver out instead: no ride can be dispatched from there.
        """
        if not indexable(lat, lng):
            return await self.remove(driver_id, vehicle_type, version=version or version_of(seen_at))
        applied = await self._place(keys=self._all_keys(vehicle_type),
                                    args=self._place_args(driver_id, lat, lng, seen_at, version))
        return bool(applied)

    async def remove(self, driver_id: uuid.UUID, vehicle_type: str, *, version: int | None = None) -> bool:
        """Take the driver out of the index; False if a newer write won (default version: now)."""
        applied = await self._remove(keys=self._all_keys(vehicle_type),
                                     args=self._remove_args(driver_id, version))
        return bool(applied)


class DriverIndexReader(_Layout):
    """Searches the index from sync code (dispatch jobs); writes for the CLI and the demo seed."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        super().__init__(keys)
        self._client = client
        self._place = client.register_script(_PLACE)
        self._remove = client.register_script(_REMOVE)
        self._nearby = client.register_script(_NEARBY)
        self._prune = client.register_script(_PRUNE)

    def nearby(self, vehicle_type: str, lat: float, lng: float, radius_km: float, *, limit: int,
               seen_after: float, exclude: Collection[uuid.UUID] = frozenset()
               ) -> list[tuple[uuid.UUID, float]]:
        """`(driver_id, distance_km)` of the nearest `limit` drivers within `radius_km`, nearest first.

        Only drivers seen at or after `seen_after` (epoch s), none of `exclude`.
        """
        return self.nearby_many([NearbyQuery(vehicle_type, lat, lng, radius_km, frozenset(exclude))],
                                limit=limit, seen_after=seen_after)[0]

    def nearby_many(self, queries: Sequence[NearbyQuery], *, limit: int, seen_after: float,
                    as_text: bool = False) -> list[list[Any]]:
        """`nearby` for many searches in one Redis round trip (a batch of dispatch rounds), in order;
        `as_text`: each `(driver_id, distance_km)` as the text Redis answered (nothing parsed)."""
        pipe = self._client.pipeline(transaction=False)
        asked: list[int] = []
        for i, query in enumerate(queries):
            if limit <= 0 or query.radius_km <= 0 or not indexable(query.lat, query.lng):
                continue
            radii = probe_radii(query.radius_km)
            count = limit + len(query.exclude) + max(8, limit // 2)  # a little over, for the filters
            args: list[Any] = [repr(float(query.lng)), repr(float(query.lat)), limit, repr(float(seen_after)),
                               count, len(radii), *(repr(r) for r in radii), *(str(d) for d in query.exclude)]
            self._nearby(keys=[self._keys.driver_geo(query.vehicle_type),
                               self._keys.driver_seen(query.vehicle_type)], args=args, client=pipe)
            asked.append(i)
        results: list[list[Any]] = [[] for _ in queries]
        if not asked:
            return results
        for i, flat in zip(asked, pipe.execute(), strict=True):
            pairs = [(_text(flat[j]), _text(flat[j + 1])) for j in range(0, min(len(flat), 2 * limit), 2)]
            results[i] = pairs if as_text else [(uuid.UUID(d), float(km)) for d, km in pairs]
        return results

    def place(self, driver_id: uuid.UUID, vehicle_type: str, lat: float, lng: float, seen_at: float,
              *, version: int | None = None) -> bool:
        """As `DriverIndex.place`."""
        if not indexable(lat, lng):
            return self.remove(driver_id, vehicle_type, version=version or version_of(seen_at))
        return bool(self._place(keys=self._all_keys(vehicle_type),
                                args=self._place_args(driver_id, lat, lng, seen_at, version)))

    def place_many(self, vehicle_type: str,
                   drivers: Iterable[tuple[uuid.UUID, float, float, float]]) -> None:
        """Index many `(driver_id, lat, lng, seen_at)` in pipelined batches (seeding, rebuilding)."""
        keys = self._all_keys(vehicle_type)
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        for driver_id, lat, lng, seen_at in drivers:
            if indexable(lat, lng):
                self._place(keys=keys, args=self._place_args(driver_id, lat, lng, seen_at, None), client=pipe)
                pending += 1
            if pending >= 1000:
                pipe.execute()
                pending = 0
        if pending:
            pipe.execute()

    def remove(self, driver_id: uuid.UUID, vehicle_type: str, *, version: int | None = None) -> bool:
        """As `DriverIndex.remove`."""
        return bool(self._remove(keys=self._all_keys(vehicle_type),
                                 args=self._remove_args(driver_id, version)))

    def prune(self, vehicle_types: Iterable[str], seen_before: float, *, limit: int | None = None) -> int:
        """Drop drivers not seen since `seen_before` (epoch s); they return with their next report.

        At most `limit` per vehicle type (None: all), `PRUNE_BATCH` per script call.
        """
        horizon = version_of(time.time()) - VERSION_HORIZON_S * 1_000_000
        dropped = 0
        for vehicle_type in vehicle_types:
            left = limit
            while left is None or left > 0:
                batch_size = PRUNE_BATCH if left is None else min(PRUNE_BATCH, left)
                batch = int(self._prune(keys=self._all_keys(vehicle_type),
                                        args=[repr(float(seen_before)), batch_size, horizon]))
                dropped += batch
                left = None if left is None else left - batch
                if batch < batch_size:
                    break
        if dropped:
            log.info("driver_index.pruned", dropped=dropped)
        return dropped
