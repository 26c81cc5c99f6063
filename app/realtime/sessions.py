"""The sockets this server holds, and ending them: at their token's expiry, or on request.

Each socket is recorded with its user, its session (the access token's `sid`) and its token's
expiry. A local timer disconnects it at that expiry (a client refreshes by reconnecting with a new
token). `sessions.end_sockets` (logout, logout-all, suspension) publishes an end request on
`sockets:end`; every socket server ends its matching sockets and acks the request by adding its
id to the request's ack set. A socket server announces itself with a heartbeat (its id in the
`sockets:servers` sorted set, scored by time), so the job can tell whether every live server acked.

The server registers (heartbeat, then subscription) before it accepts its first socket, so a
server with sockets is always one the job waits for.

A server cut off from Redis for longer than its heartbeat's lifetime is no longer waited for, and
the end requests published meanwhile never reach it (redis-py even resubscribes silently inside a
read). So whenever its subscription is re-established (by us after a drop, or by redis-py: the
connection's connect callback), the server re-verifies every socket it holds with the access gate
(`verify`, the same check as at connect) and ends those whose token is now refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aredis

from app.keys import RedisKeys
from app.logging import get_logger
from app.redis_conn import REDIS_ERRORS

log = get_logger("realtime.sessions")

#: A server whose heartbeat is older than this is taken for gone.
SERVER_TTL_S = 15.0
HEARTBEAT_EVERY_S = 5.0
ACK_TTL_S = 3600


class RecheckDeferred(Exception):
    """The access check could not answer now (Redis or PostgreSQL unreachable): try again later."""


LISTEN_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, msgspec.ValidationError, RecheckDeferred)


class EndRequest(msgspec.Struct, frozen=True):
    request: str
    user_id: str = msgspec.field(name="userId")
    reason: str
    session_id: str | None = msgspec.field(default=None, name="sessionId")


@dataclass
class LiveSocket:
    user_id: str
    session_id: str
    token: str
    expiry: asyncio.TimerHandle | None = None


Ender = Callable[[str, str, str], Awaitable[None]]  # (sid, user id, reason)
#: The access check of a socket's token: None (still allowed), or why it is refused now (a reason
#: for `session:ended`); raises `RecheckDeferred` when it cannot tell.
Verifier = Callable[[str], Awaitable[str | None]]


async def allow_all(token: str) -> str | None:
    return None


@dataclass
class SocketRegistry:
    client: aredis.Redis
    keys: RedisKeys
    end_socket: Ender
    verify: Verifier = allow_all
    server_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sockets: dict[str, LiveSocket] = field(default_factory=dict)
    #: Times the end-request channel was (re)subscribed, and whether the held sockets need a recheck.
    subscriptions: int = 0
    _recheck_due: bool = False
    _started: asyncio.Event | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # --- sockets -------------------------------------------------------------------------------
    async def add(self, sid: str, user_id: str, session_id: str, expires_at: float, token: str) -> None:
        await self.ensure_started()
        socket = LiveSocket(user_id, session_id, token)
        delay = max(0.0, expires_at - time.time())
        socket.expiry = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self.end_socket(sid, user_id, "token_expired")))
        self.sockets[sid] = socket

    def remove(self, sid: str) -> None:
        socket = self.sockets.pop(sid, None)
        if socket is not None and socket.expiry is not None:
            socket.expiry.cancel()

    def matching(self, request: EndRequest) -> list[str]:
        return [sid for sid, s in self.sockets.items()
                if s.user_id == request.user_id
                and (request.session_id is None or s.session_id == request.session_id)]

    async def handle(self, request: EndRequest) -> None:
        """End the request's sockets held here, then ack it."""
        sids = self.matching(request)
        for sid in sids:
            self.remove(sid)
            await self.end_socket(sid, request.user_id, request.reason)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.keys.socket_end_acks(request.request), self.server_id)
        pipe.expire(self.keys.socket_end_acks(request.request), ACK_TTL_S)
        await pipe.execute()
        log.info("socket.end_request_done", request=request.request, ended=len(sids))

    async def recheck(self) -> None:
        """Verify every held socket's token again; end those refused now."""
        ended = 0
        for sid, socket in list(self.sockets.items()):
            reason = await self.verify(socket.token)
            if reason is not None and sid in self.sockets:
                self.remove(sid)
                await self.end_socket(sid, socket.user_id, reason)
                ended += 1
        log.info("socket.rechecked", sockets=len(self.sockets) + ended, ended=ended)

    def _on_reconnect(self, _connection: object) -> None:
        """redis-py re-established the subscription on its own: requests may have been missed."""
        self._recheck_due = True

    # --- registration ----------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.Event()
            self._tasks = [asyncio.create_task(self._heartbeat(), name="socket-heartbeat"),
                           asyncio.create_task(self._listen(), name="socket-end-requests")]
        async with asyncio.timeout(10.0):
            await self._started.wait()

    async def beat(self) -> None:
        await self.client.zadd(self.keys.socket_servers(), {self.server_id: time.time()})

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.beat()
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def _listen(self) -> None:
        """Follow the end-request channel; resubscribe after a drop (a request missed meanwhile is
        not acked, so its job retries and publishes it again)."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.keys.socket_end_channel())
                if pubsub.connection is not None:  # registered after connecting: fires on a reconnect
                    pubsub.connection.register_connect_callback(self._on_reconnect)
                self.subscriptions += 1
                self._recheck_due = self._recheck_due or self.subscriptions > 1
                await self.beat()
                assert self._started is not None
                self._started.set()
                await self._follow(pubsub)
            except asyncio.CancelledError:
                raise
            except LISTEN_ERRORS as error:
                log.warning("socket.end_requests_dropped", error=repr(error))
                await asyncio.sleep(0.5)
            finally:
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._on_reconnect)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)

    async def _follow(self, pubsub: aredis.client.PubSub) -> None:
        while True:
            if self._recheck_due:
                self._recheck_due = False
                try:
                    await self.recheck()
                except LISTEN_ERRORS:
                    self._recheck_due = True
                    raise
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                await self.handle(msgspec.json.decode(message["data"], type=EndRequest))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.zrem(self.keys.socket_servers(), self.server_id)


def encode(request: EndRequest) -> bytes:
    return msgspec.json.encode(request)
