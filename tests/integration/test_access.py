"""Who is calling (`app/services/access.py`): token checks, the revocation cache, failing closed.

Real PostgreSQL and Redis. Redis restarts are simulated by deleting the run's keys, or done for
real on a throw-away `redis-server`; "Redis down" is a throw-away server killed by its PID.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.security import issue_access_token
from app.settings import Settings
from tests.integration.conftest import (
    Accounts,
    AppFactory,
    Client,
    RedisServer,
    bearer,
    error_code,
    forget_everything_in_redis,
    with_redis,
)


# --- the token itself --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": "Basic YWRhOnNlY3JldA=="}, id="basic-scheme"),
        pytest.param({"Authorization": "Bearer not.a.jwt"}, id="garbage"),
    ],
)
async def test_a_request_without_a_usable_token_is_invalid_token(
    api: Client, headers: dict[str, str]
) -> None:
    response = await api.get("/api/v1/me", headers=headers)

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_a_token_signed_with_another_key_is_invalid(
    api: Client, accounts: Accounts, settings: Settings
) -> None:
    # Given a token for a real user, but signed with someone else's secret
    user_id = uuid.UUID((await accounts.register())["user"]["id"])
    forged_settings = dataclasses.replace(settings.auth, jwt_secret="x" * 48)
    forged, _ = issue_access_token(forged_settings, user_id=user_id, role="admin", session_id=uuid.uuid4(),
                                   generation=0)

    response = await accounts.me(forged)

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_an_expired_access_token_is_token_expired(accounts: Accounts, settings: Settings) -> None:
    # Given an access token issued to a real user long enough ago to have expired
    user_id = uuid.UUID((await accounts.register())["user"]["id"])
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.auth.access_token_ttl_s + 60)
    expired, _ = issue_access_token(settings.auth, user_id=user_id, role="customer",
                                    session_id=uuid.uuid4(), generation=0, now=long_ago)

    response = await accounts.me(expired)

    assert response.status_code == 401
    assert error_code(response) == "TOKEN_EXPIRED"


async def test_a_token_of_an_account_that_does_not_exist_is_invalid(
    api: Client, settings: Settings
) -> None:
    ghost, _ = issue_access_token(settings.auth, user_id=uuid.uuid4(), role="customer",
                                  session_id=uuid.uuid4(), generation=0)

    response = await api.get("/api/v1/me", headers=bearer(ghost))

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


# --- the revocation cache ----------------------------------------------------------------------
@pytest.mark.parametrize("first", ["logged-out", "live"], ids=["logged-out-first", "live-first"])
async def test_redis_restarted_empty_does_not_let_a_logged_out_token_back_in(
    api: Client, accounts: Accounts, settings: Settings, first: str
) -> None:
    # Given one session logged out and another still live
    logged_out = await accounts.register()
    live = await accounts.session(logged_out["user"]["email"])
    response = await api.post("/api/v1/auth/logout", headers=bearer(logged_out["accessToken"]))
    assert response.status_code == 204

    # When Redis comes back empty
    forget_everything_in_redis(settings)

    # Then, whichever token comes first, the logged-out one is refused and the live one works
    checks = {"logged-out": (logged_out["accessToken"], 401), "live": (live["accessToken"], 200)}
    order = [first, *(name for name in checks if name != first)]
    for name in order:
        token, status = checks[name]
        response = await accounts.me(token)
        assert response.status_code == status, (name, response.text)
        if status == 401:
            assert error_code(response) == "TOKEN_REVOKED"


async def test_redis_restarted_empty_does_not_undo_logout_all(
    api: Client, accounts: Accounts, settings: Settings
) -> None:
    # Given a user who logged out everywhere, then logged in again
    before = await accounts.register()
    response = await api.post("/api/v1/auth/logout-all", headers=bearer(before["accessToken"]))
    assert response.status_code == 204
    after = await accounts.session(before["user"]["email"])

    # When Redis comes back empty
    forget_everything_in_redis(settings)

    # Then the token from before logout-all is still refused, and the new one works
    refused = await accounts.me(before["accessToken"])
    assert refused.status_code == 401
    assert error_code(refused) == "TOKEN_REVOKED"
    assert (await accounts.me(after["accessToken"])).status_code == 200


async def test_a_real_redis_restart_costs_no_error_and_keeps_logouts(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer
) -> None:
    # Given a web process on its own Redis, with one session logged out and one live
    client = await make_client(with_redis(settings, redis_server.url))
    accounts = Accounts(client)
    logged_out = await accounts.register()
    live = await accounts.session(logged_out["user"]["email"])
    logout = await client.post("/api/v1/auth/logout", headers=bearer(logged_out["accessToken"]))
    assert logout.status_code == 204
    assert (await accounts.me(live["accessToken"])).status_code == 200

    # When that Redis crashes and comes back empty on the same port
    redis_server.kill()
    redis_server.start()

    # Then the very next request is answered normally (the dropped connection is retried)
    assert (await accounts.me(live["accessToken"])).status_code == 200
    # And the logged-out token is still refused
    refused = await accounts.me(logged_out["accessToken"])
    assert refused.status_code == 401
    assert error_code(refused) == "TOKEN_REVOKED"


# --- failing closed ----------------------------------------------------------------------------
async def test_with_redis_down_token_checks_fail_closed(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer
) -> None:
    # Given a signed-in customer on a web process whose Redis then dies
    client = await make_client(with_redis(settings, redis_server.url))
    accounts = Accounts(client)
    session = await accounts.session((await accounts.register())["user"]["email"])
    assert (await accounts.me(session["accessToken"])).status_code == 200
    redis_server.kill()

    # When the customer calls the API (promptly answered, never hung). The process's mirror of
    # the revocation cache goes dark as soon as its subscription drops, within moments: no
    # revocation can be made while Redis is down, so nothing is missed in that instant.
    async with asyncio.timeout(15):
        deadline = asyncio.get_running_loop().time() + 2.0
        me = await accounts.me(session["accessToken"])
        while me.status_code == 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            me = await accounts.me(session["accessToken"])
        logout = await client.post("/api/v1/auth/logout", headers=bearer(session["accessToken"]))
        login = await accounts.login(session["user"]["email"])
        refresh = await accounts.refresh(session["refreshToken"])

    # Then every answer is 503 SERVICE_UNAVAILABLE naming Redis: no access, and no 500
    for response in (me, logout, login, refresh):
        assert response.status_code == 503, response.text
        assert error_code(response) == "SERVICE_UNAVAILABLE"
        assert response.json()["error"]["details"] == {"dependency": "redis"}
        assert response.headers["Retry-After"]
