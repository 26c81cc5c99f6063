"""Login limits a client can't talk its way around: per address (X-Forwarded-For believed only from
trusted proxies) and per account (failed logins back off, whichever address they come from)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from ipaddress import ip_network

import httpx
import pytest

from app.settings import Settings
from tests.integration.conftest import PASSWORD, Accounts, AppFactory, error_code, serving

LOGIN = "/api/v1/auth/login"


def per_address(settings: Settings, limit: int, *proxies: str) -> Settings:
    auth = dataclasses.replace(settings.auth, rate_limit_requests=limit,
                               trusted_proxies=tuple(ip_network(p) for p in proxies))
    return dataclasses.replace(settings, auth=auth)


@pytest.fixture
def farm_behind_no_proxy(clean: None, settings: Settings) -> Iterator[str]:
    with serving(per_address(settings, 3)) as url:
        yield url


@pytest.fixture
def farm_behind_loopback_proxy(clean: None, settings: Settings) -> Iterator[str]:
    with serving(per_address(settings, 3, "127.0.0.0/8")) as url:
        yield url


def attempt(i: int) -> dict[str, str]:
    return {"email": f"nobody{i}@example.com", "password": "guessing-1234"}


async def test_a_client_writing_its_own_forwarded_for_is_still_one_address(
    farm_behind_no_proxy: str,
) -> None:
    # Given a farm with no trusted proxy, 3 login attempts per address and window
    async with httpx.AsyncClient(base_url=farm_behind_no_proxy) as client:
        # When a client sends a new X-Forwarded-For with each attempt
        answers = [await client.post(LOGIN, json=attempt(i), headers={"X-Forwarded-For": f"203.0.113.{i}"})
                   for i in range(4)]

    # Then the header changes nothing: the fourth attempt is refused
    assert [r.status_code for r in answers] == [401, 401, 401, 429]
    assert error_code(answers[-1]) == "RATE_LIMITED" and int(answers[-1].headers["Retry-After"]) >= 1


async def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client(
    farm_behind_loopback_proxy: str,
) -> None:
    async with httpx.AsyncClient(base_url=farm_behind_loopback_proxy) as client:
        # Given one client, whose forged left-most entry changes each time, seen by our proxy
        spoofed = [await client.post(LOGIN, json=attempt(i),
                                     headers={"X-Forwarded-For": f"6.6.6.{i}, 198.51.100.7"})
                   for i in range(4)]
        # And another client behind the same proxy
        other = await client.post(LOGIN, json=attempt(9), headers={"X-Forwarded-For": "198.51.100.8"})

    # Then the first is limited by its real address, and the other still gets its own attempts
    assert [r.status_code for r in spoofed] == [401, 401, 401, 429]
    assert other.status_code == 401


async def test_failed_logins_of_one_account_back_off_from_any_address_and_a_success_resets(
    settings: Settings, make_client: AppFactory
) -> None:
    # Given an account, two web processes and 2 failures allowed before the backoff
    auth = dataclasses.replace(settings.auth, login_failures_allowed=2, login_max_lock_s=30)
    tuned = dataclasses.replace(settings, auth=auth)
    first, second = await make_client(tuned), await make_client(tuned)
    email = (await Accounts(first).register("customer"))["user"]["email"]
    wrong = {"email": email.upper(), "password": "not-the-password"}

    # When two wrong passwords are tried on one process, a third on the other
    answers = [await first.post(LOGIN, json=wrong), await first.post(LOGIN, json=wrong),
               await second.post(LOGIN, json=wrong)]

    # Then the third failure locks the account: the next try (even the right password) is 429
    assert [r.status_code for r in answers] == [401, 401, 401]
    locked = await first.post(LOGIN, json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429 and error_code(locked) == "RATE_LIMITED"
    assert int(locked.headers["Retry-After"]) >= 1

    # When the client waits as long as Retry-After said (the lock's end, on Redis's clock), the right
    # password works and the count starts again
    await asyncio.sleep(int(locked.headers["Retry-After"]))
    assert (await first.post(LOGIN, json={"email": email, "password": PASSWORD})).status_code == 200
    assert [(await first.post(LOGIN, json=wrong)).status_code for _ in range(2)] == [401, 401]


async def test_unknown_emails_back_off_exactly_like_known_ones(
    settings: Settings, make_client: AppFactory
) -> None:
    auth = dataclasses.replace(settings.auth, login_failures_allowed=1, login_max_lock_s=30)
    client = await make_client(dataclasses.replace(settings, auth=auth))
    known = (await Accounts(client).register("customer"))["user"]["email"]

    for email in (known, "ghost@example.com"):
        codes = [(await client.post(LOGIN, json={"email": email, "password": "wrong-password"})).status_code
                 for _ in range(3)]
        assert codes == [401, 401, 429], email


@pytest.fixture
def farm_with_two_tries(clean: None, settings: Settings) -> Iterator[str]:
    auth = dataclasses.replace(settings.auth, login_failures_allowed=2, login_max_lock_s=60,
                               rate_limit_requests=1000)
    with serving(dataclasses.replace(settings, auth=auth)) as url:
        yield url


async def test_a_burst_of_concurrent_guesses_gets_no_more_tries_than_allowed(
    farm_with_two_tries: str,
) -> None:
    # Given an account allowed 2 failed logins before the backoff
    async with httpx.AsyncClient(base_url=farm_with_two_tries, timeout=30) as client:
        email = (await Accounts(client).register("customer"))["user"]["email"]  # type: ignore[arg-type]

        # When 12 wrong passwords arrive at once
        guesses = [{"email": email, "password": f"guess-{i:04}"} for i in range(12)]
        answers = await asyncio.gather(*(client.post(LOGIN, json=guess) for guess in guesses))

    # Then only the allowance plus the attempt that set the lock were checked; the rest are 429
    codes = sorted(r.status_code for r in answers)
    assert codes == [401] * 3 + [429] * 9, codes
