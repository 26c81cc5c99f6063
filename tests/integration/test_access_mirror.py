"""The per-process mirror of the revocation cache: several web processes, one truth.

Each app instance here stands for a web process with its own Redis clients and its own mirror.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.settings import Settings
from tests.integration.conftest import Accounts, AppFactory, bearer, error_code


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 1.0) -> bool:
    """True as soon as `check` holds; pub/sub delivery takes milliseconds, so the window is short."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)


async def mirror_live(client: httpx.AsyncClient) -> bool:
    return bool(client.app.state.ctx.mirror.live)  # type: ignore[attr-defined]


async def test_a_logout_on_one_process_is_refused_by_another_that_served_the_token_from_memory(
    settings: Settings, make_client: AppFactory
) -> None:
    # Given two web processes, and a customer whose token the second one has already served
    first, second = await make_client(settings), await make_client(settings)
    assert await eventually(lambda: mirror_live(second), within_s=5)
    accounts = Accounts(first)
    session = await accounts.session((await accounts.register())["user"]["email"])
    token = session["accessToken"]
    assert (await Accounts(second).me(token)).status_code == 200
    mirror = second.app.state.ctx.mirror  # type: ignore[attr-defined]
    assert mirror.user(uuid.UUID(session["user"]["id"])) is not None, "answered from memory"

    # When the customer logs out through the first process
    assert (await first.post("/api/v1/auth/logout", headers=bearer(token))).status_code == 204

    # Then the second process refuses the token too, within the pub/sub delivery time
    async def refused() -> bool:
        response = await Accounts(second).me(token)
        return response.status_code == 401 and error_code(response) == "TOKEN_REVOKED"

    assert await eventually(refused)


async def test_a_suspension_on_one_process_reaches_the_memory_of_another(
    settings: Settings, make_client: AppFactory
) -> None:
    # Given a driver whose token a second process answers from memory
    first, second = await make_client(settings), await make_client(settings)
    assert await eventually(lambda: mirror_live(second), within_s=5)
    accounts = Accounts(first)
    driver = await accounts.register("driver", vehicleType="van")
    token = driver["accessToken"]
    assert (await Accounts(second).me(token)).status_code == 200
    admin = await accounts.admin()

    # When an admin suspends the driver through the first process
    response = await first.post(f"/api/v1/admin/drivers/{driver['user']['id']}/suspend",
                                json={"reason": "documents expired"},
                                headers=bearer(admin["accessToken"]))
    assert response.status_code == 204

    # Then the second process answers 403 ACCOUNT_DEACTIVATED for the driver's token
    async def deactivated() -> bool:
        me = await Accounts(second).me(token)
        return me.status_code == 403 and error_code(me) == "ACCOUNT_DEACTIVATED"

    assert await eventually(deactivated)


async def test_an_idle_mirror_stays_live_on_its_own_pings(
    settings: Settings, make_client: AppFactory, monkeypatch: Any
) -> None:
    # Given a web process whose mirror pings every 0.1 s and gives up after 0.4 s of silence
    import app.adapters.access_cache as access_cache

    monkeypatch.setattr(access_cache, "PING_EVERY_S", 0.1)
    monkeypatch.setattr(access_cache, "DEAD_AFTER_S", 0.4)
    client = await make_client(settings)
    assert await eventually(lambda: mirror_live(client), within_s=5)
    mirror = client.app.state.ctx.mirror  # type: ignore[attr-defined]
    epoch = mirror.epoch

    # When nothing is announced for several silence windows
    await asyncio.sleep(1.5)

    # Then it never went dark (going dark bumps the epoch and empties the memory)
    assert mirror.live
    assert mirror.epoch == epoch
