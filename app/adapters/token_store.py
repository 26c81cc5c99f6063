"""The Redis side of authentication: revoked sessions and user snapshots, checked in one round trip.

PostgreSQL is the truth; Redis is a cache that must never let a revoked token back in:
- a *loaded* marker says the revoked-session cache mirrors PostgreSQL; when it is missing (Redis
  restarted empty) the cache is rebuilt from PostgreSQL before any token is accepted;
- user snapshots (status, token generation, profile) are written with a compare-and-set on the
  generation, so a slow reader can never put back an older snapshot than a writer's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import datetime

import msgspec
import redis.asyncio as aredis

from app.keys import RedisKeys

# Store the snapshot unless the stored one has a newer generation; announce it if asked to.
_CAS_SNAPSHOT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and tonumber(decoded['generation']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
"""

#: Messages on the auth-changes channel (see `app.adapters.access_cache`).
USER_CHANGED = "u"
SESSION_REVOKED = "s"
CACHE_REBUILT = "r"


class UserSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the fast path knows about a user: enough for auth checks and `GET /me`."""

    id: uuid.UUID
    email: str
    full_name: str
    phone: str
    role: str
    vehicle_type: str | None
    whatsapp_opt_in: bool
    is_active: bool
    generation: int
    created_at: datetime
    #: The phone was proven by a one-time code (snapshots cached before this field: False).
    phone_verified: bool = False
    #: An admin's `full` or `read_only` access (`models.AdminAccess`); `full` for every other role.
    admin_access: str = "full"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UserSnapshot)


class AccessState(msgspec.Struct, frozen=True):
    """The cache's answer for one token: whether it is loaded, revoked, and the user snapshot."""

    loaded: bool
    session_revoked: bool
    user: UserSnapshot | None


class TokenStore:
    def __init__(self, client: aredis.Redis, keys: RedisKeys, user_ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._user_ttl_s = user_ttl_s
        self._cas = client.register_script(_CAS_SNAPSHOT)

    async def access_state(self, session_id: uuid.UUID, user_id: uuid.UUID) -> AccessState:
        loaded, revoked, user = await self._redis.mget(
            self._keys.revocations_loaded(),
            self._keys.revoked_session(session_id),
            self._keys.user_snapshot(user_id),
        )
        return AccessState(
            loaded=loaded is not None,
            session_revoked=revoked is not None,
            user=_decoder.decode(user) if user is not None else None,
        )

    async def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop the cached snapshot (here and in every process): the next check reloads it."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.user_snapshot(user_id))
        pipe.publish(self._keys.auth_changes_channel(), f"{USER_CHANGED}|{user_id}")
        await pipe.execute()

    async def is_session_revoked(self, session_id: uuid.UUID) -> bool:
        return bool(await self._redis.exists(self._keys.revoked_session(session_id)))

    async def put_user(self, snapshot: UserSnapshot, *, announce: bool) -> None:
        """Cache a snapshot (compare-and-set on its generation).

        `announce=True` for a change (every process drops its copy); a cache fill of what
        PostgreSQL already says is not announced.
        """
        channel = self._keys.auth_changes_channel() if announce else ""
        await self._cas(
            keys=[self._keys.user_snapshot(snapshot.id)],
            args=[_encoder.encode(snapshot), snapshot.generation, self._user_ttl_s, channel,
                  f"{USER_CHANGED}|{snapshot.id}"],
        )

    async def revoke_sessions(self, sessions: Iterable[tuple[uuid.UUID, int]]) -> None:
        """Mark sessions revoked for `ttl` seconds each (the longest an access token lives).

        The per-session key, the index and the announcement are written atomically (MULTI).
        """
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        index = self._keys.revoked_sessions_index()
        for session_id, ttl in sessions:
            if ttl > 0:
                lapses = int(now + ttl)
                pipe.set(self._keys.revoked_session(session_id), "1", ex=ttl)
                pipe.zadd(index, {str(session_id): lapses})
                pipe.publish(self._keys.auth_changes_channel(), f"{SESSION_REVOKED}|{session_id}|{lapses}")
        pipe.zremrangebyscore(index, "-inf", now)
        await pipe.execute()

    async def revoked_sessions(self) -> dict[uuid.UUID, float]:
        """Every session revocation still in force: id → when it lapses (epoch seconds)."""
        rows = await self._redis.zrangebyscore(
            self._keys.revoked_sessions_index(), time.time(), "+inf", withscores=True
        )
        return {uuid.UUID(str(row[0])): float(row[1]) for row in rows}

    async def try_lock_rebuild(self, ttl_s: int = 10) -> bool:
        return bool(await self._redis.set(self._keys.revocations_rebuild_lock(), "1", nx=True, ex=ttl_s))

    async def finish_rebuild(self, sessions: Iterable[tuple[uuid.UUID, int]]) -> None:
        await self.revoke_sessions(sessions)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.revocations_loaded(), "1")
        pipe.delete(self._keys.revocations_rebuild_lock())
        pipe.publish(self._keys.auth_changes_channel(), CACHE_REBUILT)
        await pipe.execute()

    async def is_loaded(self) -> bool:
        return bool(await self._redis.exists(self._keys.revocations_loaded()))
