"""The publisher: emits Socket.IO events to rooms through Redis pub/sub, from any process.

Workers and the CLI use `Publisher` (python-socketio's `RedisManager(write_only=True)`); the API
uses `AsyncPublisher` (`AsyncRedisManager(write_only=True)`) so an emit never blocks its event
loop. Both speak the same channel, so every socket server in the farm receives every emit.
Call them after commit (`uow.after_commit`), never before.

An event to a watched-only room (`map:{region}`, `ops`) is published only while some socket is in
that room (`app.adapters.watched_rooms`): the check is a dict in memory, read from Redis at most
every second, so the live map costs the hot paths nothing while nobody watches it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aredis
import socketio

from app.adapters.watched_rooms import WatchedRooms, is_watched_only
from app.keys import RedisKeys
from app.logging import get_logger
from app.redis_conn import create_async_redis, create_sync_redis
from app.settings import RedisSettings
from app.timestamps import rfc3339

log = get_logger("realtime")


#: KEYS: the channel. ARGV: messages, published in order. Returns how many.
_PUBLISH_MANY = """
for i = 1, #ARGV do
  redis.call('PUBLISH', KEYS[1], ARGV[i])
end
return #ARGV
"""
#: Messages per script call (its arguments are held in Redis's memory while it runs).
PUBLISH_CHUNK = 1000


class BusJson:
    """JSON for the Redis bus: msgspec, so ids, times and structs encode without glue."""

    @staticmethod
    def dumps(data: Any, *args: Any, **kwargs: Any) -> str:
        return msgspec.json.encode(data).decode()

    @staticmethod
    def loads(data: str | bytes, *args: Any, **kwargs: Any) -> Any:
        return msgspec.json.decode(data)


def disconnect_message(sid: str, host_id: str) -> dict[str, Any]:
    """The pub/sub message that makes the socket server holding `sid` disconnect it.

    A write-only manager's own `disconnect()` first applies the message to its local server, which
    it does not have (AttributeError on `None.disconnect`), and never publishes it; so the
    publishers send python-socketio's message themselves.
    """
    return {"method": "disconnect", "sid": sid, "namespace": "/", "host_id": host_id}


def stamp(payload: dict[str, Any]) -> dict[str, Any]:
    """Every payload carries `at` (RFC 3339 UTC) unless the caller set it."""
    if "at" not in payload:
        payload = {**payload, "at": rfc3339(datetime.now(UTC))}
    return payload


class Publisher:
    def __init__(self, settings: RedisSettings) -> None:
        self._channel = RedisKeys(settings).socketio_channel()
        self._manager = socketio.RedisManager(
            settings.url, channel=self._channel, write_only=True, json=BusJson,
        )
        # Our own client for batched publishes: it retries once and raises, never drops silently.
        self._redis = create_sync_redis(settings, decode_responses=False)
        self._publish_many = self._redis.register_script(_PUBLISH_MANY)
        self.watched = WatchedRooms(RedisKeys(settings).watched_rooms())

    def watched_rooms(self) -> WatchedRooms:
        """The watched-only rooms someone is in (re-read at most every second)."""
        return self.watched.read(self._redis)

    def unwatched(self, room: object) -> bool:
        return is_watched_only(room) and not self.watched_rooms().has(str(room))

    def emit(self, event: str, payload: dict[str, Any], room: str | list[str]) -> None:
        if self.unwatched(room):
            return
        self._manager.emit(event, stamp(payload), room=room, namespace="/")
        log.debug("realtime.emitted", event_name=event, room=room)

    def emit_many(self, events: list[tuple[str, dict[str, Any], str]]) -> None:
        """Publish many `(event, payload, room)` in one Redis round trip (a dispatch round's offers).

        Each is python-socketio's own pub/sub emit message (what `RedisManager.emit` publishes for
        a plain JSON payload), so every socket server handles it as usual. Unlike the manager's
        publish, a Redis failure raises, so the job is retried instead of the emits vanishing.
        """
        events = [item for item in events if not self.unwatched(item[2])]
        if not events:
            return
        host_id = self._manager.host_id
        encode = msgspec.json.encode
        messages = [encode({"method": "emit", "event": event, "data": [stamp(payload)], "binary": False,
                            "namespace": "/", "room": room, "skip_sid": None, "callback": None,
                            "host_id": host_id}) for event, payload, room in events]
        # One script call publishes a chunk in order: one command to build and one reply to parse
        # per chunk, not per event (a dispatch batch is thousands of offers).
        for first in range(0, len(messages), PUBLISH_CHUNK):
            self._publish_many(keys=[self._channel], args=messages[first:first + PUBLISH_CHUNK])
        log.debug("realtime.emitted_many", count=len(events))

    def disconnect(self, sid: str) -> None:
        self._manager._publish(disconnect_message(sid, self._manager.host_id))

    def close(self) -> None:
        self._redis.close()
        redis_client = getattr(self._manager, "redis", None)
        if redis_client is not None:
            redis_client.close()


class AsyncPublisher:
    def __init__(self, settings: RedisSettings, redis: aredis.Redis | None = None) -> None:
        self._manager = socketio.AsyncRedisManager(
            settings.url, channel=RedisKeys(settings).socketio_channel(), write_only=True,
            json=BusJson,
        )
        self._settings = settings
        #: The process's client (for the watched rooms); made on first use when none is given.
        self._redis = redis
        self.watched = WatchedRooms(RedisKeys(settings).watched_rooms())

    async def watched_rooms(self) -> WatchedRooms:
        """The watched-only rooms someone is in (re-read at most every second)."""
        if self._redis is None:
            self._redis = create_async_redis(self._settings)
        return await self.watched.aread(self._redis)

    async def emit(self, event: str, payload: dict[str, Any], room: str | list[str]) -> None:
        if is_watched_only(room) and not (await self.watched_rooms()).has(str(room)):
            return
        await self._manager.emit(event, stamp(payload), room=room, namespace="/")
        log.debug("realtime.emitted", event_name=event, room=room)

    async def disconnect(self, sid: str) -> None:
        await self._manager._publish(disconnect_message(sid, self._manager.host_id))
