"""The watched-only rooms (`map:{region}`, `ops`) this socket server's sockets are in.

Each is announced to the publishers of the farm (`app.adapters.watched_rooms.announce`) when a
socket joins it and again every `RENEW_S` while one stays (a map room with its region's bounds,
computed again each time), so publishers emit its events only while someone watches. A room its
last socket left is no longer renewed and lapses after `WATCH_TTL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from app.adapters.watched_rooms import RENEW_S, Bounds, announce
from app.api.context import WebContext
from app.keys import MAP_ROOM_PREFIX
from app.logging import get_logger
from app.services import live_map

log = get_logger("realtime.rooms")


class RoomWatch:
    def __init__(self, context: Callable[[], WebContext]) -> None:
        self.context = context
        self._members: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def join(self, room: str, sid: str, bounds: Bounds | None) -> None:
        """Announce `room` (raises on a Redis error: the caller refuses the subscription)."""
        ctx = self.context()
        await announce(ctx.redis, ctx.keys.watched_rooms(), {room: bounds})
        ctx.publisher.watched.invalidate()  # this process's own emits see it at once
        self._members.setdefault(room, set()).add(sid)
        if self._task is None:
            self._task = asyncio.create_task(self._renew(), name="room-watch")
            ctx.on_close.append(self.stop)

    def leave(self, room: str, sid: str) -> None:
        members = self._members.get(room)
        if members is not None:
            members.discard(sid)
            if not members:
                del self._members[room]

    def forget(self, sid: str) -> None:
        for room in list(self._members):
            self.leave(room, sid)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                await self.renew()
            except Exception as error:  # Redis or PostgreSQL away: the next pass tries again
                log.warning("rooms.renew_failed", error=repr(error))

    async def renew(self) -> None:
        rooms = list(self._members)
        if not rooms:
            return
        ctx = self.context()
        claims: dict[str, Bounds | None] = {}
        async with ctx.sessions() as db:
            for room in rooms:
                claims[room] = (await live_map.region_bounds(db, room[len(MAP_ROOM_PREFIX):])
                                if room.startswith(MAP_ROOM_PREFIX) else None)
        await announce(ctx.redis, ctx.keys.watched_rooms(), claims)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
