"""Clients shared by every job of a worker process: created on first use, closed at shutdown."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.driver_index import DriverIndexReader
from app.adapters.realtime import Publisher
from app.adapters.stripe_gateway import StripeGateway
from app.connection_budget import worker_pool_size
from app.db import create_sync_engine, sync_session_factory
from app.keys import RedisKeys
from app.redis_conn import create_sync_redis
from app.settings import Settings, get_settings


@dataclass
class WorkerResources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    keys: RedisKeys
    publisher: Publisher
    driver_index: DriverIndexReader
    _stripe: StripeGateway | None = None

    def stripe(self) -> StripeGateway:
        """The Stripe client (made on first use; `PaymentsDisabled` with no key configured)."""
        if self._stripe is None:
            self._stripe = StripeGateway(self.settings.stripe)
        return self._stripe

    def close(self) -> None:
        self.publisher.close()
        self.redis.close()
        self.engine.dispose()


_lock = threading.Lock()
_resources: WorkerResources | None = None


def get_resources() -> WorkerResources:
    global _resources
    if _resources is None:
        with _lock:
            if _resources is None:
                settings = get_settings()
                engine = create_sync_engine(settings.db, pool_size=worker_pool_size(settings))
                client = create_sync_redis(settings.redis)
                keys = RedisKeys(settings.redis)
                _resources = WorkerResources(
                    settings=settings,
                    engine=engine,
                    sessions=sync_session_factory(engine),
                    redis=client,
                    keys=keys,
                    publisher=Publisher(settings.redis),
                    driver_index=DriverIndexReader(client, keys),
                )
    return _resources


def close_resources() -> None:
    global _resources
    with _lock:
        if _resources is not None:
            _resources.close()
            _resources = None
