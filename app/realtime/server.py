"""python-socketio `AsyncServer` over `AsyncRedisManager`: every web process sees every emit.

A client connects with `auth: {token}`; a missing, expired or revoked token is refused with the
API's error code. The socket joins `user:{id}` (and `driver:{id}` for drivers). The server records
its session and token expiry (`SocketRegistry`): it is disconnected at that expiry, and when its
session ends (logout: that session; logout-all, suspension: all the user's sockets).

The events are handled by `ClientNamespace`, the server's one namespace (`/`). Admins may also
watch a region's live map (`subscribe:map`, room `map:{region}`) and the farm's queues and workers
(`subscribe:ops`, room `ops`); those rooms' events are published only while someone is in them
(`RoomWatch`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import socketio
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.adapters.realtime import BusJson, stamp
from app.api.context import WebContext
from app.api.schemas_drivers import SocketLocationIn
from app.db import async_unit_of_work
from app.errors import AppError, ServiceUnavailable
from app.keys import OPS_ROOM, calendar_room, driver_room, map_room, ride_room, user_room
from app.logging import get_logger
from app.observability.web import SOCKET_CONNECTIONS
from app.realtime.manager import FanOutRedisManager
from app.realtime.room_watch import RoomWatch
from app.realtime.sessions import RecheckDeferred, SocketRegistry
from app.redis_conn import REDIS_ERRORS
from app.services import drivers, live_map, rides

log = get_logger("realtime.server")

#: Redis or PostgreSQL unreachable: the client is told to try again.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    *REDIS_ERRORS, OperationalError, InterfaceError, PoolTimeoutError,
)
#: `session:ended` reasons for a socket found refused when rechecked (else "revoked").
RECHECK_REASONS = {"ACCOUNT_DEACTIVATED": "suspended", "TOKEN_EXPIRED": "token_expired"}
#: The socket registry could not announce this server (Redis unreachable): refused, try again.
REGISTRY_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, TimeoutError)


def create_socket_server(context: Callable[[], WebContext], *, redis_url: str, channel: str,
                         cors_origins: list[str] | None) -> socketio.AsyncServer:
    """`cors_origins` None: only the page's own origin (Host) may open a socket."""
    manager = FanOutRedisManager(redis_url, channel=channel, json=BusJson)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=cors_origins,
        json=BusJson,
        logger=False,
        engineio_logger=False,
    )
    sio.register_namespace(ClientNamespace(context))
    return sio


class ClientNamespace(socketio.AsyncNamespace):
    """The namespace `/`: connect auth, the user's rooms, the ride rooms, a driver's location, and
    ending a socket at its token's expiry or when its session ends."""

    #: Each client event, and the method (`on_<name>`) that handles it. Listed because the event
    #: names hold a ':', which `AsyncNamespace`'s own lookup (`on_<event>`) cannot name.
    EVENTS: ClassVar[dict[str, str]] = {
        "connect": "connect",
        "disconnect": "disconnect",
        "driver:location": "driver_location",
        "subscribe:ride": "subscribe_ride",
        "unsubscribe:ride": "unsubscribe_ride",
        "subscribe:calendar": "subscribe_calendar",
        "unsubscribe:calendar": "unsubscribe_calendar",
        "subscribe:map": "subscribe_map",
        "unsubscribe:map": "unsubscribe_map",
        "subscribe:ops": "subscribe_ops",
        "unsubscribe:ops": "unsubscribe_ops",
    }

    def __init__(self, context: Callable[[], WebContext]) -> None:
        super().__init__("/")
        self.context = context
        self._counted: set[str] = set()  # sockets `connect` accepted (and the gauge counts)
        self._registry: SocketRegistry | None = None
        self.rooms_watched = RoomWatch(context)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Run the handler of `event`; an event with none is not handled (and not acked)."""
        name = self.EVENTS.get(event)
        if name is None:
            return self.server.not_handled
        return await super().trigger_event(name, *args)

    async def end_socket(self, sid: str, user_id: str, reason: str) -> None:
        """Tell the socket why, then disconnect it (its token expired, or its session ended)."""
        await self.emit("session:ended", stamp({"userId": user_id, "reason": reason}), to=sid)
        await self.disconnect(sid)
        log.info("socket.ended", sid=sid, reason=reason)

    async def verify(self, token: str) -> str | None:
        """The connect-time check again, for a socket held across a gap in the end requests."""
        try:
            await self.context().gate.authenticate(token)
        except ServiceUnavailable as error:
            raise RecheckDeferred(error.message) from error
        except AppError as error:
            return RECHECK_REASONS.get(error.code, "revoked")
        except DEPENDENCY_ERRORS as error:
            raise RecheckDeferred(repr(error)) from error
        return None

    def registry(self) -> SocketRegistry:
        if self._registry is None:
            ctx = self.context()
            self._registry = SocketRegistry(ctx.redis, ctx.keys, self.end_socket, self.verify)
            ctx.on_close.append(self._registry.stop)
        return self._registry

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        ctx = self.context()
        given = auth.get("token") if isinstance(auth, dict) else None
        token = given if isinstance(given, str) else ""
        try:
            principal = await ctx.gate.authenticate(token)
        except AppError as error:
            log.info("socket.refused", code=error.code)
            raise socketio.exceptions.ConnectionRefusedError(error.message, {"code": error.code}) from None
        except REDIS_ERRORS:
            raise socketio.exceptions.ConnectionRefusedError(
                "Try again shortly.", {"code": "SERVICE_UNAVAILABLE"}
            ) from None
        user_id = str(principal.id)
        await self.save_session(sid, {"user_id": user_id, "role": principal.role,
                                      "session_id": str(principal.claims.session_id)})
        await self.enter_room(sid, user_room(user_id))
        if principal.role == "driver":
            await self.enter_room(sid, driver_room(user_id))
        try:
            await self.registry().add(sid, user_id, str(principal.claims.session_id),
                                      principal.claims.expires_at, token)
        except REGISTRY_ERRORS:
            raise socketio.exceptions.ConnectionRefusedError(
                "Try again shortly.", {"code": "SERVICE_UNAVAILABLE"}
            ) from None
        self._counted.add(sid)
        SOCKET_CONNECTIONS.inc()
        log.info("socket.connected", user_id=user_id, sid=sid)

    async def on_disconnect(self, sid: str, *reason: Any) -> None:
        if sid in self._counted:
            self._counted.discard(sid)
            SOCKET_CONNECTIONS.dec()
        if self._registry is not None:
            self._registry.remove(sid)
        self.rooms_watched.forget(sid)
        try:
            session = await self.get_session(sid)
        except KeyError:
            return
        log.info("socket.disconnected", user_id=session.get("user_id"), sid=sid)

    async def on_driver_location(self, sid: str, data: Any = None) -> dict[str, Any]:
        """A driver's position, handled as `PUT /drivers/me/location`; acked `{ok}` or `{ok, error}`."""
        session = await self.get_session(sid)
        if session.get("role") != "driver":
            return refusal("FORBIDDEN", "Only drivers report a location.")
        try:
            report = msgspec.convert(data, SocketLocationIn)
        except msgspec.ValidationError as error:
            return refusal("VALIDATION_ERROR", str(error), invalid_fields(error))
        ctx, driver_id = self.context(), uuid.UUID(session["user_id"])
        try:
            async with async_unit_of_work(ctx.sessions) as uow:
                await drivers.update_location(uow, ctx.driver_index, driver_id, report.lat, report.lng,
                                              report.heading, report.speed_kph, publisher=ctx.publisher)
        except AppError as error:
            return refusal(error.code, error.message, error.details)
        except DEPENDENCY_ERRORS as error:
            log.warning("socket.driver_location_unavailable", error=repr(error))
            return refusal("SERVICE_UNAVAILABLE", "Try again shortly.")
        return {"ok": True}

    async def on_subscribe_ride(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Join `ride:{id}`: only the ride's customer, its driver or an admin (FORBIDDEN otherwise,
        whether the ride exists or not, so ids leak nothing)."""
        ride_id = _ride_id(data)
        session = await self.get_session(sid)
        if ride_id is None:
            return refusal("FORBIDDEN", "You may not follow this ride.")
        ctx = self.context()
        try:
            async with ctx.sessions() as db:
                allowed = await rides.may_follow(db, uuid.UUID(session["user_id"]), session["role"], ride_id)
        except DEPENDENCY_ERRORS as error:
            log.warning("socket.subscribe_unavailable", error=repr(error))
            return refusal("SERVICE_UNAVAILABLE", "Try again shortly.")
        if not allowed:
            return refusal("FORBIDDEN", "You may not follow this ride.")
        await self.enter_room(sid, ride_room(ride_id))
        return {"ok": True}

    async def on_unsubscribe_ride(self, sid: str, data: Any = None) -> dict[str, Any]:
        ride_id = _ride_id(data)
        if ride_id is not None:
            await self.leave_room(sid, ride_room(ride_id))
        return {"ok": True}


    async def on_subscribe_calendar(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Join `calendar:{providerId}` for its `slots:changed` (a provider's free slots are public)."""
        provider_id = _uuid_field(data, "providerId")
        if provider_id is None:
            return refusal("VALIDATION_ERROR", "Give the providerId to follow.", {"providerId": "a UUID"})
        await self.enter_room(sid, calendar_room(provider_id))
        return {"ok": True}

    async def on_unsubscribe_calendar(self, sid: str, data: Any = None) -> dict[str, Any]:
        provider_id = _uuid_field(data, "providerId")
        if provider_id is not None:
            await self.leave_room(sid, calendar_room(provider_id))
        return {"ok": True}

    # --- the operations console (admins only) ------------------------------------------------------
    async def _is_admin(self, sid: str) -> bool:
        return bool((await self.get_session(sid)).get("role") == "admin")

    async def on_subscribe_map(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Join `map:{region}` (`map:ride`, `map:driver`): admins only; an unknown region is NOT_FOUND."""
        if not await self._is_admin(sid):
            return refusal("FORBIDDEN", "Only admins watch the live map.")
        region = _region(data)
        if region is None:
            return refusal("VALIDATION_ERROR", "Give the region to watch.", {"region": "a region code"})
        try:
            async with self.context().sessions() as db:
                if not await live_map.region_exists(db, region):
                    return refusal("NOT_FOUND", "No region has this code.")
                bounds = await live_map.region_bounds(db, region)
            await self.rooms_watched.join(map_room(region), sid, bounds)
        except DEPENDENCY_ERRORS as error:
            log.warning("socket.subscribe_unavailable", error=repr(error))
            return refusal("SERVICE_UNAVAILABLE", "Try again shortly.")
        await self.enter_room(sid, map_room(region))
        return {"ok": True}

    async def on_unsubscribe_map(self, sid: str, data: Any = None) -> dict[str, Any]:
        if not await self._is_admin(sid):
            return refusal("FORBIDDEN", "Only admins watch the live map.")
        region = _region(data)
        if region is not None:
            await self.leave_room(sid, map_room(region))
            self.rooms_watched.leave(map_room(region), sid)
        return {"ok": True}

    async def on_subscribe_ops(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Join `ops` (`ops:snapshot` every 2 s from the clock): admins only."""
        if not await self._is_admin(sid):
            return refusal("FORBIDDEN", "Only admins watch the farm.")
        try:
            await self.rooms_watched.join(OPS_ROOM, sid, None)
        except DEPENDENCY_ERRORS as error:
            log.warning("socket.subscribe_unavailable", error=repr(error))
            return refusal("SERVICE_UNAVAILABLE", "Try again shortly.")
        await self.enter_room(sid, OPS_ROOM)
        return {"ok": True}

    async def on_unsubscribe_ops(self, sid: str, data: Any = None) -> dict[str, Any]:
        if not await self._is_admin(sid):
            return refusal("FORBIDDEN", "Only admins watch the farm.")
        await self.leave_room(sid, OPS_ROOM)
        self.rooms_watched.leave(OPS_ROOM, sid)
        return {"ok": True}


def _region(data: Any) -> str | None:
    region = data.get("region") if isinstance(data, dict) else None
    return region if isinstance(region, str) and 0 < len(region) <= 16 else None


def _uuid_field(data: Any, name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(data[name])) if isinstance(data, dict) else None
    except (KeyError, ValueError):
        return None


def _ride_id(data: Any) -> uuid.UUID | None:
    return _uuid_field(data, "rideId")


def refusal(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The ack of a refused client event."""
    return {"ok": False, "error": {"code": code, "message": message, "details": details}}


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def invalid_fields(error: msgspec.ValidationError) -> dict[str, str]:
    """`{field: problem}` as the API's 400s name them (an unknown or missing field by its name)."""
    problem = str(error)
    field = ""
    if at := _AT_PATH.search(problem):
        problem, field = problem[: at.start()], at.group(1)
    if named := _NAMED_FIELD.search(problem):
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    return {field or "body": problem}
