"""Which watched-only rooms (`map:{region}`, `ops`) have someone in them, so their events cost
nothing while nobody watches.

Socket servers announce the rooms their sockets joined (`announce`): one hash field per room,
`<prefix>:ops:watched`, holding when the claim lapses (`WATCH_TTL_S`, renewed every `RENEW_S`
while a socket stays) and, for a map room, the region's bounds. Publishers read the hash at most
every `CACHE_S` (`WatchedRooms`), so a location report or a status change checks a dict in memory
and publishes nothing for a room nobody watches; a new watcher hears from every process within
`CACHE_S` (from its own web process at once).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import redis
import redis.asyncio as aredis

from app.keys import MAP_ROOM_PREFIX, OPS_ROOM
from app.redis_conn import REDIS_ERRORS

#: A room stays watched this long after a socket server last announced it (s).
WATCH_TTL_S: Final = 30.0
#: Socket servers announce their watched rooms this often (s).
RENEW_S: Final = 10.0
#: Publishers read the watched rooms at most this often (s).
CACHE_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Bounds:
    """A region's box on the map, in degrees."""

    min_lat: float
    min_lng: float
    max_lat: float
    max_lng: float

    def holds(self, lat: float, lng: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lng <= lng <= self.max_lng

    def as_json(self) -> dict[str, float]:
        return {"minLat": self.min_lat, "minLng": self.min_lng,
                "maxLat": self.max_lat, "maxLng": self.max_lng}

    @classmethod
    def of_json(cls, data: Any) -> Bounds | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(float(data["minLat"]), float(data["minLng"]),
                       float(data["maxLat"]), float(data["maxLng"]))
        except (KeyError, TypeError, ValueError):
            return None


def is_watched_only(room: object) -> bool:
    """Whether events to `room` are published only while someone watches it."""
    return isinstance(room, str) and (room == OPS_ROOM or room.startswith(MAP_ROOM_PREFIX))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class WatchedRooms:
    """One process's view of the watched rooms, read from Redis at most every `CACHE_S`."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._rooms: dict[str, Bounds | None] = {}
        self._read_at = -math.inf

    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= CACHE_S

    def invalidate(self) -> None:
        """Read again at the next check (this process's socket server just announced a room)."""
        self._read_at = -math.inf

    def take(self, raw: dict[Any, Any]) -> None:
        now, rooms = time.time(), {}
        for field, value in raw.items():
            try:
                claim = json.loads(value)
                if float(claim["until"]) > now:
                    rooms[_text(field)] = Bounds.of_json(claim.get("bounds"))
            except (ValueError, TypeError, KeyError):
                continue
        self._rooms = rooms
        self._read_at = time.monotonic()

    def read(self, client: redis.Redis) -> WatchedRooms:
        if self.stale():
            try:
                self.take(client.hgetall(self.key))
            except REDIS_ERRORS:  # Redis away: the emits would fail too; ask again later
                self._read_at = time.monotonic()
        return self

    async def aread(self, client: aredis.Redis) -> WatchedRooms:
        if self.stale():
            try:
                self.take(await client.hgetall(self.key))
            except REDIS_ERRORS:
                self._read_at = time.monotonic()
        return self

    def has(self, room: str) -> bool:
        return room in self._rooms

    def regions_holding(self, lat: float, lng: float) -> list[str]:
        """The watched regions whose bounds hold the point."""
        return [room[len(MAP_ROOM_PREFIX):] for room, bounds in self._rooms.items()
                if bounds is not None and room.startswith(MAP_ROOM_PREFIX) and bounds.holds(lat, lng)]


async def announce(client: aredis.Redis, key: str, rooms: dict[str, Bounds | None]) -> None:
    """Claim `rooms` as watched for the next `WATCH_TTL_S` (a map room with its region's bounds)."""
    if not rooms:
        return
    until = time.time() + WATCH_TTL_S
    await client.hset(key, mapping={room: json.dumps({"until": until,
                                                      "bounds": bounds.as_json() if bounds else None})
                                    for room, bounds in rooms.items()})
