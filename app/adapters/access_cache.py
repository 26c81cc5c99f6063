"""A per-process mirror of the revocation cache, kept current over Redis pub/sub.

Authenticating a request needs three facts: the revocation cache is loaded, the token's session
is not revoked, and the user's snapshot (active, token generation). Redis holds them; asking it on
every request costs a round trip and most of a web process's CPU. This mirror answers from memory
while — and only while — its subscription to the auth-changes channel is live:

- it subscribes first, then loads every revocation still in force from Redis, so nothing revoked
  in between is missed (revocations only add, user changes only drop: order does not matter);
- writers change Redis and announce it in the same atomic step (`TokenStore`), so a revocation
  reaches every process within the pub/sub delivery time, and before the writer's commit;
- user snapshots are filled on a miss from the slow path, and a fill that raced an announcement
  is discarded (the `epoch` counter), so an older snapshot never outlives a newer one;
- if the subscription drops (Redis restarted or unreachable), the mirror empties itself and every
  check goes back to Redis, which fails closed (503) while Redis is down;
- redis-py reconnects a dropped pub/sub connection and resubscribes *silently* inside a read;
  announcements sent in the gap are lost. The mirror therefore hooks the connection's (re)connect
  callbacks: any reconnect after the first subscribe makes it go dark at once and start over
  (subscribe, then reload every revocation), exactly as a read that raised would;
- a subscription is judged silent by the time spent *listening* to it without a reply (our pings
  included), not by the clock: a read that comes back later than it asked to was held up by our
  own event loop (a busy process, CPU contention), which says nothing about Redis. A stalled loop
  therefore never makes the mirror forget; it only makes a truly silent connection take longer to
  notice.
Revocations cannot happen without Redis (writers fail first), so while Redis is unreachable the
mirror can only be missing changes that were never made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aredis

from app.adapters.token_store import (
    CACHE_REBUILT,
    SESSION_REVOKED,
    USER_CHANGED,
    TokenStore,
    UserSnapshot,
)
from app.logging import get_logger

log = get_logger("auth.mirror")

#: Ping after this long listening without a reply; this long listening without one (despite the
#: pings) means the subscription is dead. Both count listening time, not wall time (`Silence`).
PING_EVERY_S = 2.0
DEAD_AFTER_S = 6.0
#: The longest single wait for a reply (the granularity of the two counts above).
LISTEN_FOR_S = 1.0


class Silence:
    """How long the subscription has been listened to without a reply, and since our last ping.

    Each read counts only the wait it asked for: the rest of the time it took is the event loop
    being late, not Redis being silent."""

    def __init__(self) -> None:
        self.silent_s = 0.0
        self.since_ping_s = 0.0

    def heard(self) -> None:
        self.silent_s = 0.0

    def waited(self, asked_s: float, took_s: float) -> None:
        listened = max(0.0, min(asked_s, took_s))
        self.silent_s += listened
        self.since_ping_s += listened

    def pinged(self) -> None:
        self.since_ping_s = 0.0


class AccessMirror:
    def __init__(self, client: aredis.Redis, store: TokenStore, channel: str, *,
                 user_ttl_s: float = 60.0) -> None:
        self._client = client
        self._store = store
        self._channel = channel
        self._user_ttl_s = user_ttl_s
        self._users: dict[uuid.UUID, tuple[UserSnapshot, float]] = {}
        self._revoked: dict[uuid.UUID, float] = {}
        self._live = False
        #: Bumped by every announcement that may make a cached snapshot stale.
        self.epoch = 0
        #: Replies read on the subscription (announcements and the answers to our pings).
        self.replies_heard = 0
        #: Set by the connection's connect callback when redis-py re-established it on its own.
        self._reconnected = False
        #: How many times the subscription was found re-established behind our back.
        self.silent_reconnects = 0

    @property
    def live(self) -> bool:
        return self._live

    # --- reads (request path) -------------------------------------------------------------------
    def user(self, user_id: uuid.UUID) -> UserSnapshot | None:
        """The cached snapshot, or None (not live, missing or past its local lifetime)."""
        if not self._live:
            return None
        entry = self._users.get(user_id)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def session_revoked(self, session_id: uuid.UUID) -> bool:
        lapses = self._revoked.get(session_id)
        return lapses is not None and lapses > time.time()

    def remember(self, user: UserSnapshot, epoch: int) -> None:
        """Cache a snapshot read on the slow path, unless an announcement arrived meanwhile."""
        if self._live and epoch == self.epoch:
            self._users[user.id] = (user, time.monotonic() + self._user_ttl_s)

    # --- announcements ---------------------------------------------------------------------------
    def apply(self, message: str) -> None:
        kind, _, rest = message.partition("|")
        if kind == SESSION_REVOKED:
            session_id, _, lapses = rest.partition("|")
            self._revoked[uuid.UUID(session_id)] = float(lapses)
        elif kind == USER_CHANGED:
            self.epoch += 1
            self._users.pop(uuid.UUID(rest), None)
        elif kind == CACHE_REBUILT:
            self.epoch += 1
            self._users.clear()

    def _on_reconnect(self, _connection: object) -> None:
        """redis-py re-established the pub/sub connection (and resubscribes): what was announced
        while it was down is lost, so nothing in memory can be trusted any more."""
        self._reconnected = True
        self.silent_reconnects += 1
        if self._live:
            log.warning("auth.mirror_reconnected")
        self._go_dark()

    def _go_dark(self) -> None:
        self._live = False
        self.epoch += 1
        self._users.clear()
        self._revoked.clear()

    def _prune(self) -> None:
        now = time.time()
        for session_id in [s for s, lapses in self._revoked.items() if lapses <= now]:
            del self._revoked[session_id]
        clock = time.monotonic()
        for user_id in [u for u, (_, until) in self._users.items() if until < clock]:
            del self._users[user_id]

    # --- subscription ----------------------------------------------------------------------------
    async def run(self, ensure_loaded: Callable[[], Awaitable[None]]) -> None:
        """Follow the channel until cancelled; reconnect with backoff, dark while disconnected."""
        backoff = 0.2
        while True:
            pubsub = self._client.pubsub()
            self._reconnected = False
            try:
                await pubsub.subscribe(self._channel)
                if pubsub.connection is None:
                    raise ConnectionError("the auth-changes subscription has no connection")
                # Registered after the first connect: it fires only on a reconnect.
                pubsub.connection.register_connect_callback(self._on_reconnect)
                await ensure_loaded()
                revoked = await self._store.revoked_sessions()
                self._check_connection()
                self._revoked = {**revoked, **self._revoked}
                self._live = True
                backoff = 0.2
                log.info("auth.mirror_live", revoked_sessions=len(self._revoked))
                await self._follow(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._live:
                    log.warning("auth.mirror_dark", error=repr(error))
                self._go_dark()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._go_dark()
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._on_reconnect)
                # A read cut short by cancellation can leave the connection mid-reply: bound the
                # close so shutting down never waits on it.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)

    def _check_connection(self) -> None:
        if self._reconnected:
            raise ConnectionError("the auth-changes subscription was re-established silently")

    async def _follow(self, pubsub: aredis.client.PubSub) -> None:
        silence = Silence()
        wait_s = min(LISTEN_FOR_S, PING_EVERY_S)
        while True:
            # Every reply counts as a sign of life, our pings' included (with RESP3 a pong can come
            # back in a shape redis-py files under another type), but only messages are applied.
            started = time.monotonic()
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=wait_s)
            self._check_connection()
            if message is not None:
                silence.heard()
                self.replies_heard += 1
                if message["type"] == "message":
                    self.apply(message["data"])
                continue
            silence.waited(wait_s, time.monotonic() - started)
            if silence.silent_s > DEAD_AFTER_S:
                raise ConnectionError("the auth-changes subscription went silent")
            if silence.since_ping_s >= PING_EVERY_S:
                await pubsub.ping()
                self._check_connection()
                silence.pinged()
                self._prune()
