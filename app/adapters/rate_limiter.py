"""Rate limits counted in Redis, so they hold across every web process.

`hit`: a fixed window per client address (the auth routes). `take`: a per-user token bucket
(GCRA: one key holding the bucket's "theoretical arrival time", on Redis's clock, so every web
process agrees) — `burst` requests at once, then one per `1 / rate_per_s` seconds.
"""

from __future__ import annotations

import redis.asyncio as aredis

from app.errors import RateLimited
from app.keys import RedisKeys
from app.settings import Bucket

_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


# ARGV: emission interval (ms), burst. Returns 0 when allowed, else the ms to wait.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > window then
  return next_tat - now - window
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now))
return 0
"""


# One login attempt on an account, counted before its password is checked (so a burst of
# concurrent guesses can't all pass a check made before any was counted). KEYS[1]: the account's
# hash {attempts, until (ms)}. ARGV: attempts allowed before the backoff, the longest lock (s), how
# long a count is kept after the last attempt (s). Returns the ms left on a lock that refuses this
# attempt (0: go ahead). Each attempt past the allowance locks the next ones, doubling from 1 s.
_LOGIN_ATTEMPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local locked_until = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if locked_until > now then return locked_until - now end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local free = tonumber(ARGV[1])
local lock_s = 0
if attempts > free then
  lock_s = math.min(2 ^ (attempts - free - 1), tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'until', now + lock_s * 1000)
end
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), math.ceil(lock_s)))
return 0
"""


class RateLimiter:
    def __init__(self, client: aredis.Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._hit = client.register_script(_HIT)
        self._take = client.register_script(_TAKE)
        self._login_attempt = client.register_script(_LOGIN_ATTEMPT)
        self._client = client

    async def hit(self, scope: str, subject: str, *, limit: int, window_s: int) -> None:
        """Count one request; raise `RateLimited` (with the seconds to wait) past the limit."""
        count, ttl = await self._hit(keys=[self._keys.rate_limit(scope, subject)], args=[window_s])
        if int(count) > limit:
            raise RateLimited(retry_after_s=int(ttl))

    async def take(self, scope: str, subject: str, bucket: Bucket) -> None:
        """Take one request from `subject`'s bucket; raise `RateLimited` when it is empty."""
        if not bucket.enabled:
            return
        interval_ms = max(1, round(1000 / bucket.rate_per_s))
        wait_ms = int(await self._take(keys=[self._keys.rate_limit(scope, subject)],
                                       args=[interval_ms, bucket.burst]))
        if wait_ms > 0:
            raise RateLimited(retry_after_s=-(-wait_ms // 1000))

    # --- per account: failed logins back off, whatever address they come from ------------------
    async def begin_login(self, email: str, *, allowed: int, max_lock_s: int, forget_after_s: int) -> None:
        """Count one attempt on `email` (known or not: no account is told apart) before its password
        is checked; `RateLimited` while the account is locked. A success clears the count."""
        wait_ms = int(await self._login_attempt(keys=[self._keys.login_failures(email)],
                                                args=[allowed, max_lock_s, forget_after_s]))
        if wait_ms > 0:
            raise RateLimited(retry_after_s=-(-wait_ms // 1000))

    async def login_succeeded(self, email: str) -> None:
        await self._client.delete(self._keys.login_failures(email))
