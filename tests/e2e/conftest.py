"""End-to-end fixtures: the real web, worker and clock processes, started once per module.

They run with this test run's environment (its own database, Redis prefix and Dramatiq
namespace, set by `tests/conftest.py`), so they never see another run's data. Tests must not
truncate tables while the farm runs: each one registers its own users under unique emails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects.postgresql import insert

from app.settings import Settings
from models import Region
from tests.e2e.farm import Farm

FARM_ENV = {
    "WORKER_PROCESSES": "1",
    "WORKER_THREADS": "4",
    "TOKENS_CLEANUP_INTERVAL": "1",
    "PYTHONUNBUFFERED": "1",
}


def running_farm(extra_env: Mapping[str, str] | None = None) -> Iterator[Farm]:
    """Start the farm (FARM_ENV plus `extra_env`), yield it once ready, stop it by PID."""
    started = Farm.start({**FARM_ENV, **(extra_env or {})})
    try:
        started.wait_ready(timeout_s=30)
        yield started
    finally:
        started.stop()


def ensure_region(settings: Settings, code: str) -> None:
    """A region for the farm's rides, written before the farm starts."""
    engine = create_engine(settings.db.url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Region).values(code=code, name=code, currency="EUR",
                                               commission_rate=Decimal("0.15"))
                         .on_conflict_do_nothing(index_elements=["code"]))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def farm(database: str, redis_prefix_cleanup: None) -> Iterator[Farm]:
    yield from running_farm()


@pytest.fixture
async def http(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as client:
        yield client


async def register_customer(http: httpx.AsyncClient) -> dict[str, Any]:
    """A new customer with a unique email; returns the register answer plus the password."""
    email = f"e2e-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery staple"
    response = await http.post("/auth/register", json={
        "email": email, "password": password, "fullName": "E2E Customer",
        "phone": "+491701234567", "role": "customer",
    })
    assert response.status_code == 201, response.text
    return {**response.json(), "email": email, "password": password}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed e2e test shows what the farm's processes printed."""
    report = yield
    if report.failed:
        farm = getattr(item, "funcargs", {}).get("farm")
        if isinstance(farm, Farm):
            farm.keep_logs = True
            report.sections.append(("farm output", f"(logs kept in {farm.log_dir})\n{farm.output()}"))
    return report
