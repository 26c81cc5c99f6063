"""Creating, reading and listing rides over HTTP (real PostgreSQL and Redis)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from app.settings import Settings
from models import Job
from tests.integration.conftest import Accounts, bearer, error_code
from tests.integration.rides_support import ensure_region, ride_body

RIDES = "/api/v1/rides"


@pytest.fixture
async def customer(accounts: Accounts) -> dict[str, Any]:
    await ensure_region(accounts.client)
    return await accounts.register()


async def new_ride(accounts: Accounts, who: dict[str, Any]) -> dict[str, Any]:
    response = await accounts.client.post(RIDES, json=ride_body(), headers=bearer(who["accessToken"]))
    assert response.status_code == 201, response.text
    ride: dict[str, Any] = response.json()
    return ride


def outbox_jobs(settings: Settings) -> list[tuple[str, list[Any]]]:
    engine = create_engine(settings.db.url)
    try:
        with engine.connect() as conn:
            return [(r.actor, r.args) for r in conn.execute(select(Job))]
    finally:
        engine.dispose()


async def test_a_customer_creates_a_ride_and_its_first_dispatch_round_is_queued_with_it(
    accounts: Accounts, customer: dict[str, Any], settings: Settings
) -> None:
    # When a customer requests a ride
    response = await accounts.client.post(RIDES, json=ride_body(notes="Third floor"),
                                          headers=bearer(customer["accessToken"]))

    # Then it is stored as PENDING_BIDS at once, with its creation as the first history entry
    assert response.status_code == 201, response.text
    ride = response.json()
    assert ride["status"] == "PENDING_BIDS"
    assert ride["customerId"] == customer["user"]["id"]
    assert ride["driverId"] is None and ride["acceptedBid"] is None
    assert ride["pickup"]["address"] == "Alexanderplatz 1"
    assert ride["notes"] == "Third floor"
    assert 3.0 < ride["distanceKm"] < 3.4
    assert ride["history"] == [{"from": None, "to": "PENDING_BIDS",
                                "by": {"id": customer["user"]["id"], "role": "customer"},
                                "at": ride["history"][0]["at"], "reason": None}]
    # And dispatch round 0 was written in the same transaction (the outbox relays it)
    assert ("dispatch.step", [ride["id"], 0]) in outbox_jobs(settings)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pickup": {"lat": 91, "lng": 13.4}}, "pickup.lat"),
        ({"dropoff": {"lat": 52.5, "lng": -181}}, "dropoff.lng"),
        ({"vehicleType": "bicycle"}, "vehicleType"),
        ({"paymentMethod": "iou"}, "paymentMethod"),
        ({"region": "NOWHERE"}, "region"),
        ({"surprise": 1}, "surprise"),
    ],
    ids=["lat-out-of-range", "lng-out-of-range", "unknown-vehicle", "unknown-payment", "unknown-region",
         "unknown-field"],
)
async def test_a_bad_ride_request_is_refused_naming_the_field_and_nothing_is_stored(
    accounts: Accounts, customer: dict[str, Any], settings: Settings, change: dict[str, Any], field: str
) -> None:
    response = await accounts.client.post(RIDES, json=ride_body(**change),
                                          headers=bearer(customer["accessToken"]))

    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    assert field in response.json()["error"]["details"]
    assert outbox_jobs(settings) == []


async def test_only_customers_request_rides(accounts: Accounts, customer: dict[str, Any]) -> None:
    driver = await accounts.register("driver", vehicleType="van")
    response = await accounts.client.post(RIDES, json=ride_body(), headers=bearer(driver["accessToken"]))
    assert response.status_code == 403
    assert error_code(response) == "FORBIDDEN"


async def test_a_customer_sees_only_its_own_rides_and_another_ride_is_not_found(
    accounts: Accounts, customer: dict[str, Any]
) -> None:
    # Given two customers with a ride each
    other = await accounts.register()
    mine, theirs = await new_ride(accounts, customer), await new_ride(accounts, other)

    # Then each reads its own, and the other's ride is 404 (ids leak nothing)
    own = await accounts.client.get(f"{RIDES}/{mine['id']}", headers=bearer(customer["accessToken"]))
    assert own.status_code == 200 and own.json()["id"] == mine["id"]
    hidden = await accounts.client.get(f"{RIDES}/{theirs['id']}", headers=bearer(customer["accessToken"]))
    assert hidden.status_code == 404 and error_code(hidden) == "NOT_FOUND"
    unknown = await accounts.client.get(f"{RIDES}/{uuid.uuid4()}", headers=bearer(customer["accessToken"]))
    assert unknown.status_code == 404
    listed = await accounts.client.get(RIDES, headers=bearer(customer["accessToken"]))
    assert [r["id"] for r in listed.json()["items"]] == [mine["id"]]


async def test_rides_are_listed_newest_first_in_pages(accounts: Accounts, customer: dict[str, Any]) -> None:
    created = [(await new_ride(accounts, customer))["id"] for _ in range(5)]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await accounts.client.get(RIDES, params=params, headers=bearer(customer["accessToken"]))
        page = response.json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break

    assert seen == list(reversed(created))


async def test_a_driver_cannot_see_a_ride_it_was_never_offered(
    accounts: Accounts, customer: dict[str, Any]
) -> None:
    driver = await accounts.register("driver", vehicleType="van")
    ride = await new_ride(accounts, customer)

    response = await accounts.client.get(f"{RIDES}/{ride['id']}", headers=bearer(driver["accessToken"]))

    assert response.status_code == 404
    assert (await accounts.client.get(RIDES, headers=bearer(driver["accessToken"]))).json()["items"] == []


async def test_regions_are_public(accounts: Accounts, customer: dict[str, Any]) -> None:
    response = await accounts.client.get("/api/v1/regions")
    assert response.status_code == 200
    assert response.json() == {"items": [{"code": "BER", "name": "BER", "currency": "EUR",
                                          "commissionRate": 0.15}], "nextCursor": None}
