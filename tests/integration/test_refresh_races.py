"""Refreshes racing revocations: whatever the interleaving, once logout-all (or a logout) has answered,
no token of the revoked sessions works — including the ones a refresh in flight issued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Accounts, bearer, error_code

Client = httpx.AsyncClient

SESSIONS = 50


@pytest.fixture
async def api(web: str) -> AsyncIterator[httpx.AsyncClient]:
    """A real web process on a port: requests run concurrently there, as on a farm."""
    async with httpx.AsyncClient(base_url=web, timeout=30,
                                 limits=httpx.Limits(max_connections=SESSIONS + 5)) as client:
        yield client


@pytest.fixture
def accounts(api: httpx.AsyncClient) -> Accounts:
    return Accounts(api)  # type: ignore[arg-type]


async def _refresh(api: Client, token: str) -> dict[str, Any] | None:
    response = await api.post("/api/v1/auth/refresh", json={"refreshToken": token})
    if response.status_code == 200:
        pair: dict[str, Any] = response.json()
        return pair
    assert response.status_code == 401, response.text  # refused: never a 5xx, whatever the race
    return None


async def _refused(api: Client, accounts: Accounts, pairs: list[dict[str, Any]]) -> None:
    for pair in pairs:
        again = await api.post("/api/v1/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert again.status_code == 401 and error_code(again) == "TOKEN_REVOKED", again.text
        me = await accounts.me(pair["accessToken"])
        assert me.status_code == 401 and error_code(me) == "TOKEN_REVOKED", me.text


async def test_fifty_refreshes_racing_a_logout_all_leave_no_working_token(
    api: Client, accounts: Accounts
) -> None:
    # Given one customer signed in 50 times (50 sessions)
    first = await accounts.register("customer")
    email = first["user"]["email"]
    sessions = [first, *[await accounts.session(email) for _ in range(SESSIONS - 1)]]

    # When every session refreshes at once while the customer logs out everywhere
    async def logout_all() -> None:
        await asyncio.sleep(0)  # let the refreshes start first
        response = await api.post("/api/v1/auth/logout-all", headers=bearer(first["accessToken"]))
        assert response.status_code == 204, response.text

    results = await asyncio.gather(*(_refresh(api, s["refreshToken"]) for s in sessions), logout_all())

    # Then neither the old pairs nor any pair a racing refresh handed out works any more
    issued = [pair for pair in results[:SESSIONS] if pair is not None]
    await _refused(api, accounts, [*sessions, *issued])
    # And a login right after works
    fresh = await accounts.session(email)
    assert (await accounts.me(fresh["accessToken"])).status_code == 200


async def test_a_refresh_chain_racing_a_logout_ends_with_the_session(api: Client, accounts: Accounts) -> None:
    # Given a session that refreshes as fast as it can (each new token spent at once)
    session = await accounts.register("customer")
    seen: list[dict[str, Any]] = [session]
    stop = asyncio.Event()

    async def keep_refreshing() -> None:
        token = session["refreshToken"]
        while not stop.is_set():
            pair = await _refresh(api, token)
            if pair is None:
                return
            seen.append(pair)
            token = pair["refreshToken"]

    chain = asyncio.create_task(keep_refreshing())
    while len(seen) < 3:  # the chain is under way
        assert not chain.done(), "the chain stopped before the logout"
        await asyncio.sleep(0.001)

    # When the session logs out with its latest refresh token while the chain runs on
    latest = seen[-1]
    response = await api.post("/api/v1/auth/logout", json={"refreshToken": latest["refreshToken"]},
                              headers=bearer(latest["accessToken"]))
    assert response.status_code == 204
    stop.set()
    await asyncio.wait_for(chain, timeout=30)

    # Then every token the chain ever got is refused
    await _refused(api, accounts, seen)


async def test_concurrent_replays_of_one_refresh_token_are_each_refused_never_a_5xx(
    api: Client, accounts: Accounts
) -> None:
    # Given a session whose refresh token was spent once, and one presented several times at once
    session = await accounts.register("customer")
    spent = session["refreshToken"]
    assert await _refresh(api, spent) is not None

    # When the spent token is replayed five times at once
    replays = await asyncio.gather(*(api.post("/api/v1/auth/refresh", json={"refreshToken": spent})
                                     for _ in range(5)))

    # Then each is a 401 (reuse detected, or the session already revoked), none a 503 from a deadlock
    assert [r.status_code for r in replays] == [401] * 5, [r.text for r in replays]


async def test_a_fresh_refresh_token_presented_three_times_at_once_works_once(
    api: Client, accounts: Accounts
) -> None:
    session = await accounts.register("customer")
    answers = await asyncio.gather(*(api.post("/api/v1/auth/refresh",
                                              json={"refreshToken": session["refreshToken"]})
                                     for _ in range(3)))
    assert sorted(r.status_code for r in answers) == [200, 401, 401], [r.text for r in answers]
    # And the reuse revoked the session, the winner's new pair included
    winner = next(r.json() for r in answers if r.status_code == 200)
    await _refused(api, accounts, [winner])
