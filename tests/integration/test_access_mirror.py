"""The per-process mirror of the revocation cache: several web processes, one truth.

Each app instance here stands for a web process with its own Redis clients and its own mirror.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis

from app.settings import Settings
from tests.integration.conftest import (
    Accounts,
    AppFactory,
    Client,
    RedisServer,
    bearer,
    error_code,
    with_redis,
)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 15.0) -> bool:
    """True as soon as `check` holds. Pub/sub delivery takes milliseconds; the deadline is generous
    so that a busy machine makes the test slower, never wrong."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)


async def mirror_live(client: httpx.AsyncClient) -> bool:
    return bool(client.app.state.ctx.mirror.live)  # type: ignore[attr-defined]


@pytest.fixture
def quick_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mirrors (of apps built after this) ping every 0.05 s and give up after 0.5 s without a reply."""
    import app.adapters.access_cache as access_cache

    monkeypatch.setattr(access_cache, "PING_EVERY_S", 0.05)
    monkeypatch.setattr(access_cache, "DEAD_AFTER_S", 0.5)


def mirror_of(client: Client) -> Any:
    return client.app.state.ctx.mirror  # type: ignore[attr-defined]


def stall_event_loop(client: Client, seconds: float) -> None:
    """Keep the app's event loop busy for `seconds` (a CPU-bound burst in its web process)."""
    client.blocking_portal.call(time.sleep, seconds)


async def settled_mirror(client: Client) -> Any:
    """The app's mirror once live and past its start-up: three more replies read after it went live
    (its subscribe confirmation and the announcement of the cache rebuild it may have caused come
    before the answers to its pings), so nothing from before the test is still to arrive."""
    assert await eventually(lambda: mirror_live(client)), "the mirror never went live"
    mirror = mirror_of(client)
    heard = mirror.replies_heard

    async def settled() -> bool:
        return bool(mirror.replies_heard >= heard + 3)

    assert await eventually(settled), "the mirror's pings were not answered"
    return mirror


async def test_a_logout_on_one_process_is_refused_by_another_that_served_the_token_from_memory(
    settings: Settings, make_client: AppFactory, quick_pings: None
) -> None:
    # Given two web processes, and a customer whose token the second one has already served
    first, second = await make_client(settings), await make_client(settings)
    await settled_mirror(second)
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
    settings: Settings, make_client: AppFactory, quick_pings: None
) -> None:
    # Given a driver whose token a second process answers from memory
    first, second = await make_client(settings), await make_client(settings)
    await settled_mirror(second)
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
    settings: Settings, make_client: AppFactory, quick_pings: None
) -> None:
    # Given a live mirror on a channel where nothing is announced
    client = await make_client(settings)
    mirror = await settled_mirror(client)
    epoch, heard = mirror.epoch, mirror.replies_heard

    # When it has heard 30 answers to its own pings (at least three silence windows of listening)
    async def answered() -> bool:
        return bool(mirror.replies_heard >= heard + 30)

    assert await eventually(answered), "the mirror's pings were not answered"

    # Then it never went dark (going dark bumps the epoch and empties the memory)
    assert mirror.live
    assert mirror.epoch == epoch


async def test_a_stalled_event_loop_does_not_make_the_mirror_forget(
    settings: Settings, make_client: AppFactory, quick_pings: None
) -> None:
    # Given a customer whose token a web process answers from its mirror's memory
    client = await make_client(settings)
    mirror = await settled_mirror(client)
    accounts = Accounts(client)
    session = await accounts.session((await accounts.register())["user"]["email"])
    token, user_id = session["accessToken"], uuid.UUID(session["user"]["id"])
    assert (await accounts.me(token)).status_code == 200
    assert mirror.user(user_id) is not None
    epoch = mirror.epoch

    # When the process's event loop is held up, twice, for longer than the mirror's silence window
    for _ in range(2):
        stall_event_loop(client, 1.2)
        heard = mirror.replies_heard

        async def heard_again(since: int = heard) -> bool:
            return bool(mirror.replies_heard > since)

        assert await eventually(heard_again)

    # Then the mirror stayed live and kept what it knew (the loop was late, Redis was not silent)
    assert mirror.live and mirror.epoch == epoch
    assert mirror.user(user_id) is not None
    # And it still hears revocations: a logout is refused at once
    assert (await client.post("/api/v1/auth/logout", headers=bearer(token))).status_code == 204

    async def refused() -> bool:
        response = await accounts.me(token)
        return response.status_code == 401 and error_code(response) == "TOKEN_REVOKED"

    assert await eventually(refused)


async def test_a_subscription_that_stops_answering_goes_dark_and_comes_back(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer, quick_pings: None
) -> None:
    # Given a web process whose mirror follows a Redis of its own
    client = await make_client(with_redis(settings, redis_server.url))
    assert await eventually(lambda: mirror_live(client))
    mirror = mirror_of(client)
    assert redis_server.process is not None
    pid = redis_server.process.pid

    # When that Redis stops answering without closing the connection (frozen, a network partition)
    os.kill(pid, signal.SIGSTOP)
    try:
        # Then the mirror goes dark: every check goes back to Redis (which fails closed)
        async def dark() -> bool:
            return not mirror.live

        assert await eventually(dark), "a silent subscription was taken for a live one"
    finally:
        os.kill(pid, signal.SIGCONT)

    # And once Redis answers again the mirror is live again
    assert await eventually(lambda: mirror_live(client))


async def test_a_logout_announced_while_the_subscription_was_cut_is_refused_after_a_silent_reconnect(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer, quick_pings: None
) -> None:
    # Given two web processes on a Redis of their own; the second answers a token from memory
    own = with_redis(settings, redis_server.url)
    first, second = await make_client(own), await make_client(own)
    mirror = await settled_mirror(second)
    accounts = Accounts(first)
    session = await accounts.session((await accounts.register())["user"]["email"])
    token = session["accessToken"]
    assert (await Accounts(second).me(token)).status_code == 200
    assert mirror.user(uuid.UUID(session["user"]["id"])) is not None, "answered from memory"

    # When the second process's subscription is cut while its event loop is busy (so it can only
    # notice afterwards), and the customer logs out through the first process in that gap
    loop_held, release = threading.Event(), threading.Event()

    def hold_loop() -> None:
        loop_held.set()
        release.wait(30)

    holder = asyncio.get_running_loop().run_in_executor(
        None, lambda: second.blocking_portal.call(hold_loop))  # type: ignore[attr-defined]
    try:
        assert await asyncio.to_thread(loop_held.wait, 30), "the second process never paused"
        admin_redis = redis.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            assert admin_redis.client_kill_filter(_type="pubsub") >= 1
        finally:
            admin_redis.close()
        response = await first.post("/api/v1/auth/logout", headers=bearer(token))
        assert response.status_code == 204
    finally:
        release.set()
        await holder

    # Then the second process refuses the token once it is back (redis-py resubscribed silently,
    # so the announcement never reached it: the mirror must not trust its memory)
    async def refused() -> bool:
        answer = await Accounts(second).me(token)
        return answer.status_code == 401 and error_code(answer) == "TOKEN_REVOKED"

    assert await eventually(refused)


async def test_with_its_redis_killed_an_authenticated_route_answers_503(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer
) -> None:
    # Given a web process on a Redis of its own, answering a customer's token from memory
    client = await make_client(with_redis(settings, redis_server.url))
    mirror = await settled_mirror(client)
    accounts = Accounts(client)
    session = await accounts.session((await accounts.register())["user"]["email"])
    token = session["accessToken"]
    assert (await accounts.me(token)).status_code == 200
    assert mirror.user(uuid.UUID(session["user"]["id"])) is not None

    # When that Redis is killed
    redis_server.kill()

    # Then GET /me answers 503 SERVICE_UNAVAILABLE (the mirror went dark, Redis fails closed)
    async def unavailable() -> bool:
        answer = await accounts.me(token)
        return answer.status_code == 503 and error_code(answer) == "SERVICE_UNAVAILABLE"

    assert await eventually(unavailable)
    assert not mirror.live
