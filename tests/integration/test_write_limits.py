"""Per-user limits on authenticated writes: a token bucket per user in Redis, shared by every web
process (`app.adapters.rate_limiter.RateLimiter.take`, `app.api.dependencies.user_rate_limit`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from app.settings import Bucket, Settings
from tests.integration.conftest import Accounts, AppFactory, Client
from tests.integration.market_support import Call, Market, assert_error, at_once

#: Three at once, then one per 100 s: nothing refills while a test runs.
TIGHT = Bucket(rate_per_s=0.01, burst=3)
RIDE = {"pickup": {"lat": 52.52, "lng": 13.405}, "dropoff": {"lat": 52.50, "lng": 13.42},
        "vehicleType": "van", "region": "BER", "paymentMethod": "cash"}


def limited(settings: Settings) -> Settings:
    limits = dataclasses.replace(settings.limits, rides=TIGHT, writes=TIGHT, location=TIGHT)
    return dataclasses.replace(settings, limits=limits)


@pytest.fixture
async def market(make_client: AppFactory, settings: Settings) -> AsyncIterator[Market]:
    api = await make_client(limited(settings))
    market = Market(api, Accounts(api), settings)
    await market.region()
    try:
        yield market
    finally:
        market.close()


def assert_rate_limited(response: object) -> None:
    details = assert_error(response, 429, "RATE_LIMITED")  # type: ignore[arg-type]
    retry_after = int(response.headers["Retry-After"])  # type: ignore[attr-defined]
    assert 1 <= retry_after <= 100
    assert details["retryAfter"] == retry_after


async def test_a_customer_past_its_ride_burst_is_refused_with_retry_after(market: Market) -> None:
    # Given a customer who booked its burst of rides
    customer, other = await market.customer(), await market.customer()
    for _ in range(TIGHT.burst):
        response = await market.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)
        assert response.status_code == 201, response.text
    # When it books one more
    response = await market.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)
    # Then it is told to wait, and another customer is not
    assert_rate_limited(response)
    assert (await market.api.post("/api/v1/rides", json=RIDE, headers=other.headers)).status_code == 201


async def test_location_updates_past_the_burst_are_refused(market: Market) -> None:
    driver = await market.driver(online=False)
    for _ in range(TIGHT.burst):
        response = await market.api.put("/api/v1/drivers/me/location", json={"lat": 52.5, "lng": 13.4},
                                        headers=driver.headers)
        assert response.status_code == 204, response.text
    response = await market.api.put("/api/v1/drivers/me/location", json={"lat": 52.5, "lng": 13.4},
                                    headers=driver.headers)
    assert_rate_limited(response)


async def test_status_writes_share_one_bucket_per_user(market: Market) -> None:
    # Given a driver going online and offline (the "writes" bucket: bids, accepts, moves, ...)
    driver = await market.driver(online=False)
    answers = [await market.api.post(f"/api/v1/drivers/me/{state}", headers=driver.headers)
               for state in ("online", "offline", "online", "offline")]
    assert [a.status_code for a in answers[:3]] == [204, 204, 204]
    assert_rate_limited(answers[3])


async def test_the_limit_holds_across_web_processes(make_client: AppFactory, settings: Settings,
                                                    market: Market) -> None:
    # Given a second web process with the same limits
    second: Client = await make_client(limited(settings))
    customer = await market.customer()
    apis = [market.api, second, market.api]
    for api in apis:
        assert (await api.post("/api/v1/rides", json=RIDE, headers=customer.headers)).status_code == 201
    # Then the burst spent across both is spent for both
    assert_rate_limited(await second.post("/api/v1/rides", json=RIDE, headers=customer.headers))


# --- the cap on open rides ----------------------------------------------------------------------
CAP = 3


@pytest.fixture
async def capped(make_client: AppFactory, settings: Settings) -> AsyncIterator[Market]:
    limits = dataclasses.replace(settings.limits, open_rides_per_customer=CAP)
    api = await make_client(dataclasses.replace(settings, limits=limits))
    market = Market(api, Accounts(api), settings)
    await market.region()
    try:
        yield market
    finally:
        market.close()


async def test_exactly_the_cap_of_concurrent_ride_requests_succeed(capped: Market) -> None:
    # Given a customer sending ten ride requests at the same moment
    customer = await capped.customer()
    calls = [Call(capped.api, "POST", "/api/v1/rides", customer.headers, RIDE) for _ in range(10)]
    answers = await at_once(calls)
    # Then exactly the cap are booked, the others refused naming the cap
    assert sorted(a.status_code for a in answers) == [201] * CAP + [409] * (10 - CAP)
    for answer in answers:
        if answer.status_code == 409:
            details = assert_error(answer, 409, "CONFLICT")
            assert details == {"reason": "OPEN_RIDE_LIMIT", "limit": CAP}
    listed = await capped.api.get("/api/v1/rides", headers=customer.headers)
    assert len(listed.json()["items"]) == CAP


async def test_a_finished_ride_frees_its_place_under_the_cap(capped: Market) -> None:
    customer = await capped.customer()
    rides = [await capped.ride(customer) for _ in range(CAP)]
    refused = await capped.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)
    assert assert_error(refused, 409, "CONFLICT")["reason"] == "OPEN_RIDE_LIMIT"
    # When the customer cancels one, it may book again (and another customer was never capped)
    assert (await capped.cancel(customer, rides[0]["id"])).status_code == 200
    assert (await capped.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)).status_code == 201
    assert (await capped.ride(await capped.customer()))["status"] == "PENDING_BIDS"
