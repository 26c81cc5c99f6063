"""Schemathesis fuzzes every operation of `/schema/openapi.json` on a real web process, as a
customer, a driver, an admin and with no token: nothing it sends may get a 5xx (a 503 included:
PostgreSQL and Redis are up here). Deterministic (derandomized) and bounded, so it runs in CI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from app.settings import Settings
from tests.integration.conftest import PASSWORD, serving

#: Examples per operation and role: ~35 operations x 4 callers x this many requests.
EXAMPLES = 12
ROLES = ("customer", "driver", "admin", "anonymous")


@pytest.fixture
def farm(clean: None, settings: Settings) -> Iterator[str]:
    with serving(settings) as url:
        yield url


def _token(base: str, role: str, number: int) -> str | None:
    """A fresh session's access token for `role` (None: no token)."""
    if role == "anonymous":
        return None
    email = f"fuzz-{role}-{number}@example.com"
    if role == "admin":
        import asyncio

        from app.db import AsyncUnitOfWork
        from app.services.accounts import create_admin
        from tests.integration.conftest import own_session

        async def make() -> None:
            async with own_session() as session:
                uow = AsyncUnitOfWork(session)
                await create_admin(uow, email, PASSWORD, "Fuzz admin", "+4917000000002")
                await uow.commit()

        asyncio.run(make())
    else:
        body: dict[str, Any] = {"email": email, "password": PASSWORD, "fullName": f"Fuzz {role}",
                                "phone": "+4917012345678", "role": role}
        if role == "driver":
            body["vehicleType"] = "van"
        assert httpx.post(f"{base}/api/v1/auth/register", json=body, timeout=30).status_code == 201
    answer = httpx.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["accessToken"])


def _fuzzer(operation: Any, farm: str, headers: dict[str, str], http: requests.Session, label: str,
            failures: list[str]) -> Any:
    """A Hypothesis test of `operation` that records every 5xx in `failures`."""

    @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=operation.as_strategy())
    def fuzz(case: Any) -> None:
        response = case.call(base_url=farm, headers=headers, session=http, timeout=30)
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} for {case.method} {case.formatted_path} "
                            f"query={case.query} body={case.body!r:.200} -> {response.text[:200]}")

    return fuzz


def test_no_operation_answers_5xx_to_anything_schemathesis_sends(farm: str) -> None:
    schema = schemathesis.openapi.from_url(f"{farm}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, "the schema lost its operations"
    failures: list[str] = []
    http = requests.Session()
    number = 0
    for role in ROLES:
        for operation in operations:
            number += 1
            token = _token(farm, role, number)  # a fresh session: a fuzzed logout ends only its own
            headers = {"Authorization": f"Bearer {token}"} if token else {}

            _fuzzer(operation, farm, headers, http, f"{role} {operation.label}", failures)()
    assert not failures, "\n".join(failures[:20])
