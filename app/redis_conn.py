"""Redis clients: one sync and one async pool per process.

Both retry a dropped connection once and health-check pooled connections, so a Redis restart
costs a single retried call rather than a stream of errors.
"""

from __future__ import annotations

import redis
import redis.asyncio as aredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.settings import RedisSettings

_RETRY_ON = [RedisConnectionError, RedisTimeoutError, ConnectionResetError]


def _common(settings: RedisSettings) -> dict[str, object]:
    return {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "retry_on_error": _RETRY_ON,
    }


def create_sync_redis(settings: RedisSettings, *, decode_responses: bool = True) -> redis.Redis:
    return redis.Redis.from_url(
        settings.url,
        decode_responses=decode_responses,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        **_common(settings),
    )


def create_async_redis(settings: RedisSettings) -> aredis.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return aredis.Redis.from_url(
        settings.url,
        decode_responses=True,
        retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        max_connections=256,
        **_common(settings),  # type: ignore[arg-type]
    )


REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
