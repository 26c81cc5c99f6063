"""The publisher: emits Socket.IO events to rooms through Redis pub/sub, from any process.

Workers and the CLI use `Publisher` (python-socketio's `RedisManager(write_only=True)`); the API
uses `AsyncPublisher` (`AsyncRedisManager(write_only=True)`) so an emit never blocks its event
loop. Both speak the same channel, so every socket server in the farm receives every emit.
Call them after commit (`uow.after_commit`), never before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import socketio

from app.keys import RedisKeys
from app.logging import get_logger
from app.settings import RedisSettings

log = get_logger("realtime")


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
        payload = {**payload, "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    return payload


class Publisher:
    def __init__(self, settings: RedisSettings) -> None:
        self._manager = socketio.RedisManager(
            settings.url, channel=RedisKeys(settings).socketio_channel(), write_only=True,
            json=BusJson,
        )

    def emit(self, event: str, payload: dict[str, Any], room: str | list[str]) -> None:
        self._manager.emit(event, stamp(payload), room=room, namespace="/")
        log.debug("realtime.emitted", event_name=event, room=room)

    def disconnect(self, sid: str) -> None:
        self._manager._publish(disconnect_message(sid, self._manager.host_id))

    def close(self) -> None:
        redis_client = getattr(self._manager, "redis", None)
        if redis_client is not None:
            redis_client.close()


class AsyncPublisher:
    def __init__(self, settings: RedisSettings) -> None:
        self._manager = socketio.AsyncRedisManager(
            settings.url, channel=RedisKeys(settings).socketio_channel(), write_only=True,
            json=BusJson,
        )

    async def emit(self, event: str, payload: dict[str, Any], room: str | list[str]) -> None:
        await self._manager.emit(event, stamp(payload), room=room, namespace="/")
        log.debug("realtime.emitted", event_name=event, room=room)

    async def disconnect(self, sid: str) -> None:
        await self._manager._publish(disconnect_message(sid, self._manager.host_id))
