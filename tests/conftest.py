"""Test set-up shared by every layer.

Each test run gets its own PostgreSQL database (`dispatchfarm_test_<random>`, migrated at start,
dropped at the end) and its own Redis key prefix and Dramatiq namespace, so runs never clash.
The environment is set here, before any application module reads the settings.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

RUN_ID = secrets.token_hex(4)
TEST_DB = f"dispatchfarm_test_{RUN_ID}"
os.environ.update(
    {
        "APP_ENV": "test",
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEST_DB}",
        "REDIS_URL": os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "REDIS_PREFIX": f"t{RUN_ID}",
        "DRAMATIQ_NAMESPACE": f"t{RUN_ID}-dramatiq",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "console",
        "AUTH_RATE_LIMIT": "100000",
        # Per-user write limits and the open-ride cap are off for the suite (tests of them turn
        # them on); the e2e farm inherits this environment.
        "RIDE_RATE_LIMIT": "0",
        "WRITE_RATE_LIMIT": "0",
        "LOCATION_RATE_LIMIT": "0",
        "PAYMENT_SETUP_RATE_LIMIT": "0",
        "OPEN_RIDES_PER_CUSTOMER": "0",
        "OUTBOX_POLL_INTERVAL": "0.5",
        "WORKER_POLL_TIMEOUT_MS": "50",
        # argon2 at its lowest cost keeps the suite fast; production uses the library defaults.
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
    }
)

from app.settings import Settings, get_settings  # noqa: E402
from models.migrate import drop_database, upgrade  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[str]:
    """The run's migrated database (dropped when the run ends)."""
    upgrade(settings.db.url)
    yield settings.db.url
    drop_database(settings.db.url)


@pytest.fixture(scope="session")
def redis_prefix_cleanup(settings: Settings) -> Iterator[None]:
    yield
    from app.redis_conn import create_sync_redis

    client = create_sync_redis(settings.redis)
    for pattern in (f"{settings.redis.prefix}:*", f"{settings.redis.dramatiq_namespace}:*"):
        batch = list(client.scan_iter(match=pattern, count=1000))
        if batch:
            client.delete(*batch)
    client.close()


def clean_state(settings: Settings) -> None:
    """Empty every table and the run's Redis keys (each integration test starts from nothing)."""
    from sqlalchemy import create_engine, text

    from app.redis_conn import create_sync_redis
    from models import Base

    engine = create_engine(settings.db.url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    client = create_sync_redis(settings.redis)
    for pattern in (f"{settings.redis.prefix}:*", f"{settings.redis.dramatiq_namespace}:*"):
        batch = list(client.scan_iter(match=pattern, count=1000))
        if batch:
            client.delete(*batch)
    client.close()


@pytest.fixture
def clean(settings: Settings, database: str, redis_prefix_cleanup: None) -> None:
    clean_state(settings)


@pytest.fixture
async def api(clean: None, settings: Settings) -> AsyncIterator[object]:
    """An HTTP client on the real app (lifespan run), over real PostgreSQL and Redis."""
    from litestar.testing import AsyncTestClient

    from app.api.app import create_app

    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client
