"""What every request handler of a web process shares: built once at start-up, closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.adapters.rate_limiter import RateLimiter
from app.adapters.realtime import AsyncPublisher
from app.adapters.token_store import TokenStore
from app.db import async_session_factory, create_async_db_engine
from app.keys import RedisKeys
from app.redis_conn import create_async_redis
from app.services.access import AccessGate
from app.services.auth import AuthService
from app.settings import Settings


@dataclass
class WebContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: aredis.Redis
    keys: RedisKeys
    tokens: TokenStore
    gate: AccessGate
    auth: AuthService
    limiter: RateLimiter
    publisher: AsyncPublisher

    @classmethod
    def build(cls, settings: Settings) -> WebContext:
        engine = create_async_db_engine(settings.db)
        sessions = async_session_factory(engine)
        client = create_async_redis(settings.redis)
        keys = RedisKeys(settings.redis)
        tokens = TokenStore(client, keys, settings.auth.user_cache_ttl_s)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=client,
            keys=keys,
            tokens=tokens,
            gate=AccessGate(settings.auth, tokens, sessions),
            auth=AuthService(settings.auth, tokens),
            limiter=RateLimiter(client, keys),
            publisher=AsyncPublisher(settings.redis),
        )

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()
