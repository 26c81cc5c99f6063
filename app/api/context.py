"""What every request handler of a web process shares: built once at start-up, closed at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aredis
from redis import Redis as SyncRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.adapters.access_cache import AccessMirror
from app.adapters.driver_index import DriverIndex
from app.adapters.rate_limiter import RateLimiter
from app.adapters.realtime import AsyncPublisher
from app.adapters.stripe_gateway import StripeGateway, StripeWebhooks
from app.adapters.token_store import TokenStore
from app.db import async_session_factory, create_async_db_engine
from app.keys import RedisKeys
from app.redis_conn import create_async_redis, create_sync_redis
from app.services.access import AccessGate
from app.services.auth import AuthService
from app.services.ride_creation import RideWriter
from app.settings import Settings
from app.statements import StatementPool


@dataclass
class WebContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Autocommit connections for one-statement ingest paths (Stripe webhooks).
    statements: StatementPool
    redis: aredis.Redis
    keys: RedisKeys
    tokens: TokenStore
    gate: AccessGate
    auth: AuthService
    limiter: RateLimiter
    publisher: AsyncPublisher
    mirror: AccessMirror
    driver_index: DriverIndex
    #: `POST /rides` of this process, coalesced into multi-row statements on `statements`.
    ride_writer: RideWriter
    _mirror_task: asyncio.Task[None] | None = None
    _stripe: StripeGateway | None = None
    _stripe_webhooks: StripeWebhooks | None = None
    _broker_redis: SyncRedis | None = None
    #: Run first on close, while Redis is still open (the socket registry deregisters its server).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def stripe(self) -> StripeGateway:
        """The Stripe client (made on first use; `PaymentsDisabled` with no key configured)."""
        if self._stripe is None:
            self._stripe = StripeGateway(self.settings.stripe)
        return self._stripe

    def stripe_webhooks(self) -> StripeWebhooks:
        """Stripe's webhook signatures (the webhook secret only: no API key needed to verify)."""
        if self._stripe_webhooks is None:
            self._stripe_webhooks = StripeWebhooks(self.settings.stripe)
        return self._stripe_webhooks

    def broker_redis(self) -> SyncRedis:
        """A sync client on the broker's Redis for what reads it with redis-py (`QueueInspector`);
        made on first use, for calls run in a worker thread."""
        if self._broker_redis is None:
            self._broker_redis = create_sync_redis(self.settings.redis, decode_responses=False)
        return self._broker_redis

    @classmethod
    def build(cls, settings: Settings) -> WebContext:
        engine = create_async_db_engine(settings.db)
        sessions = async_session_factory(engine)
        client = create_async_redis(settings.redis)
        keys = RedisKeys(settings.redis)
        tokens = TokenStore(client, keys, settings.auth.user_cache_ttl_s)
        mirror = AccessMirror(client, tokens, keys.auth_changes_channel())
        statements = StatementPool(settings.db)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            statements=statements,
            redis=client,
            keys=keys,
            tokens=tokens,
            gate=AccessGate(settings.auth, tokens, sessions, mirror),
            mirror=mirror,
            auth=AuthService(settings.auth, tokens),
            limiter=RateLimiter(client, keys),
            publisher=AsyncPublisher(settings.redis, redis=client),
            driver_index=DriverIndex(client, keys),
            ride_writer=RideWriter(statements, settings),
        )

    def start(self) -> None:
        """Start following the auth-changes channel (call inside the running event loop)."""
        if self._mirror_task is None:
            self._mirror_task = asyncio.create_task(
                self.mirror.run(self.gate.ensure_revocations_loaded), name="auth-mirror"
            )

    async def close(self) -> None:
        for hook in self.on_close:
            await hook()
        if self._mirror_task is not None:
            # A cancellation that lands while a Redis connect is completing can be swallowed
            # (asyncio timeouts in Python 3.11), so ask again until the task has stopped.
            for _ in range(30):
                self._mirror_task.cancel()
                done, _ = await asyncio.wait({self._mirror_task}, timeout=0.1)
                if done:
                    break
            self._mirror_task = None
        await self.redis.aclose()
        if self._broker_redis is not None:
            self._broker_redis.close()
            self._broker_redis = None
        await self.statements.close()
        await self.engine.dispose()
