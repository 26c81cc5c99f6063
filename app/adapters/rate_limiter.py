"""Fixed-window rate limits counted in Redis, so they hold across every web process."""

from __future__ import annotations

import redis.asyncio as aredis

from app.errors import RateLimited
from app.keys import RedisKeys

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


class RateLimiter:
    def __init__(self, client: aredis.Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._hit = client.register_script(_HIT)

    async def hit(self, scope: str, subject: str, *, limit: int, window_s: int) -> None:
        """Count one request; raise `RateLimited` (with the seconds to wait) past the limit."""
        count, ttl = await self._hit(keys=[self._keys.rate_limit(scope, subject)], args=[window_s])
        if int(count) > limit:
            raise RateLimited(retry_after_s=int(ttl))
