"""Moving a ride after the accept, and cancelling it, over HTTP (real PostgreSQL and Redis).

The assigned driver walks the ride forward one step at a time; the customer may cancel until
PICKUP_ARRIVED, an admin in any non-final state; a finished ride frees its driver.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from app.settings import Settings
from models import Ride
from tests.integration.market_support import (
    DRIVER_STEPS,
    BusTap,
    Market,
    Person,
    assert_error,
    customer,
    market,
)

ALL_STATUSES = ("PENDING_BIDS", "NO_DRIVERS_AVAILABLE", "BID_ACCEPTED", *DRIVER_STEPS, "CANCELLED")

__all__ = ["customer", "market"]  # fixtures shared with the other ride tests


@pytest.fixture
async def driver(market: Market) -> Person:
    return await market.driver()


async def ride_at(market: Market, customer: Person, driver: Person, status: str) -> dict[str, Any]:
    """A ride of the customer, assigned to the driver, moved by it up to `status`."""
    ride = await market.assigned_ride(customer, driver)
    if status != "BID_ACCEPTED":
        await market.walk(driver, ride["id"], until=status)
    return await market.read(customer, ride["id"])


# --- the ride's shape ---------------------------------------------------------------------------------
async def test_a_rides_dispatch_round_is_an_integer_in_every_answer_from_its_creation(
    market: Market, customer: Person, driver: Person
) -> None:
    # Given a ride whose first round no dispatch worker has claimed yet
    created = await market.ride(customer)
    ride_id = created["id"]

    # When the customer and the driver go through it: list, read, accept, move, cancel
    listed = (await market.api.get("/api/v1/rides", headers=customer.headers)).json()["items"]
    read = await market.read(customer, ride_id)
    bid = await market.offered_bid(driver, ride_id)
    answers = [await market.accept(customer, ride_id, bid["id"]),
               await market.move(driver, ride_id, "DRIVER_ARRIVING"),
               await market.cancel(customer, ride_id)]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]

    # Then every ride it is shown is in round 0, never null
    rides = [created, *listed, read, *(a.json() for a in answers)]
    assert [r["dispatchRound"] for r in rides] == [0] * len(rides)

    # And a later round, once dispatch has claimed it, is shown as it is
    widened = await market.ride(customer)
    with market.db.begin() as session:
        session.execute(update(Ride).where(Ride.id == uuid.UUID(widened["id"])).values(dispatch_round=2))
    assert (await market.read(customer, widened["id"]))["dispatchRound"] == 2


# --- the driver's moves ------------------------------------------------------------------------------
async def test_the_assigned_driver_walks_the_ride_to_completed_and_is_free_again(
    market: Market, customer: Person, driver: Person, settings: Settings
) -> None:
    # Given a ride with the driver assigned
    ride = await market.assigned_ride(customer, driver)
    rooms = {f"ride:{ride['id']}", f"user:{customer.id}", f"user:{driver.id}"}

    async with BusTap(settings) as tap:
        # When the driver moves it through every step
        before = "BID_ACCEPTED"
        for step in DRIVER_STEPS:
            response = await market.move(driver, ride["id"], step)

            # Then each move answers the ride in its new status
            assert response.status_code == 200, response.text
            assert response.json()["status"] == step
            # And each is published as `ride:status` to the ride's and both users' rooms
            [emitted] = await tap.emitted()
            assert (emitted.event, set(emitted.rooms)) == ("ride:status", rooms)
            assert emitted.payload == {"rideId": ride["id"], "status": step, "from": before,
                                       "by": {"id": driver.id, "role": "driver"},
                                       "at": response.json()["history"][-1]["at"]}
            before = step

    # And the history records every change, who made it and in which role
    history = (await market.read(customer, ride["id"]))["history"]
    assert [(h["from"], h["to"], h["by"]) for h in history] == [
        (None, "PENDING_BIDS", {"id": customer.id, "role": "customer"}),
        ("PENDING_BIDS", "BID_ACCEPTED", {"id": customer.id, "role": "customer"}),
        *[(a, b, {"id": driver.id, "role": "driver"})
          for a, b in zip(("BID_ACCEPTED", *DRIVER_STEPS[:-1]), DRIVER_STEPS, strict=True)],
    ]
    # And the driver is free: it can be accepted on a new ride
    assert await market.active_ride_of(driver) is None
    assert (await market.assigned_ride(await market.customer(), driver))["driverId"] == driver.id


async def test_every_illegal_move_is_refused_with_from_and_to_and_changes_nothing(
    market: Market, customer: Person, driver: Person
) -> None:
    # Given a ride assigned to the driver
    ride = await market.assigned_ride(customer, driver)
    path = ("BID_ACCEPTED", *DRIVER_STEPS)

    for current, next_step in zip(path, (*DRIVER_STEPS, None), strict=True):
        # When the driver asks for any status but the next one (skipping, going back, staying,
        # cancelling, or anything at all once COMPLETED)
        for target in ALL_STATUSES:
            if target == next_step:
                continue
            response = await market.move(driver, ride["id"], target)

            # Then it is 409 INVALID_TRANSITION naming both ends
            assert assert_error(response, 409, "INVALID_TRANSITION") == {"from": current, "to": target}
        # (then it makes the legal step)
        if next_step is not None:
            assert (await market.move(driver, ride["id"], next_step)).status_code == 200

    # And only the legal moves are in the history
    history = await market.history_rows(ride["id"])
    assert [to for _, to, _, _ in history] == ["PENDING_BIDS", *path]


async def test_an_unknown_status_is_a_validation_error(
    market: Market, customer: Person, driver: Person
) -> None:
    ride = await market.assigned_ride(customer, driver)

    for body in ({"status": "TELEPORTED"}, {"status": "driver_arriving"}, {}, {"status": "LOADING", "x": 1}):
        response = await market.api.post(f"/api/v1/rides/{ride['id']}/status", json=body,
                                         headers=driver.headers)
        assert_error(response, 400, "VALIDATION_ERROR")
    response = await market.move(driver, ride["id"], "TELEPORTED")
    assert "status" in assert_error(response, 400, "VALIDATION_ERROR")
    assert (await market.read(customer, ride["id"]))["status"] == "BID_ACCEPTED"


async def test_only_the_assigned_driver_moves_the_ride(
    market: Market, customer: Person, driver: Person
) -> None:
    # Given an assigned ride, a driver that was offered it and lost, and outsiders
    ride = await market.ride(customer)
    loser = await market.driver()
    await market.offered_bid(loser, ride["id"])
    won = await market.offered_bid(driver, ride["id"])
    assert (await market.accept(customer, ride["id"], won["id"])).status_code == 200

    # Then those who may see the ride are forbidden, the others find nothing
    for who in (customer, await market.admin(), loser):
        assert_error(await market.move(who, ride["id"], "DRIVER_ARRIVING"), 403, "FORBIDDEN")
    for who in (await market.driver(), await market.customer()):
        assert_error(await market.move(who, ride["id"], "DRIVER_ARRIVING"), 404, "NOT_FOUND")
    # And the ride has not moved
    assert (await market.read(customer, ride["id"]))["status"] == "BID_ACCEPTED"


async def test_an_offered_driver_cannot_move_a_ride_still_taking_bids(
    market: Market, customer: Person, driver: Person
) -> None:
    ride = await market.ride(customer)
    await market.offered_bid(driver, ride["id"])

    assert_error(await market.move(driver, ride["id"], "BID_ACCEPTED"), 403, "FORBIDDEN")
    assert (await market.read(customer, ride["id"]))["status"] == "PENDING_BIDS"


# --- cancelling --------------------------------------------------------------------------------------
async def test_a_customer_cancels_a_ride_still_taking_bids_and_the_bids_are_closed(
    market: Market, customer: Person, driver: Person, settings: Settings
) -> None:
    # Given a ride with a bid on it
    ride = await market.ride(customer)
    bid = await market.offered_bid(driver, ride["id"])

    async with BusTap(settings) as tap:
        # When the customer cancels it
        response = await market.cancel(customer, ride["id"], reason="plans changed")

        # Then the ride is CANCELLED, with the reason in its history
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["status"] == "CANCELLED"
        assert cancelled["history"][-1] | {"at": None} == {
            "from": "PENDING_BIDS", "to": "CANCELLED", "by": {"id": customer.id, "role": "customer"},
            "at": None, "reason": "plans changed"}
        # And `ride:status` reached the ride's room and the customer's (no driver yet)
        [emitted] = await tap.emitted()
        assert (emitted.event, set(emitted.rooms)) == (
            "ride:status", {f"ride:{ride['id']}", f"user:{customer.id}"})
        assert emitted.payload["status"] == "CANCELLED" and emitted.payload["from"] == "PENDING_BIDS"

    # And the open bid is rejected, so nothing can be accepted any more
    assert await market.bid_statuses(ride["id"]) == {bid["id"]: "REJECTED"}
    assert_error(await market.accept(customer, ride["id"], bid["id"]), 409, "CONFLICT")


@pytest.mark.parametrize("status", ["BID_ACCEPTED", "DRIVER_ARRIVING", "PICKUP_ARRIVED"])
async def test_a_customer_cancels_an_assigned_ride_until_pickup_arrived_and_the_driver_is_freed(
    market: Market, customer: Person, driver: Person, settings: Settings, status: str
) -> None:
    # Given a ride the driver has moved up to `status`
    ride = await ride_at(market, customer, driver, status)

    async with BusTap(settings) as tap:
        # When the customer cancels it
        response = await market.cancel(customer, ride["id"])

        # Then it is CANCELLED, and the driver hears it in its own room too
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELLED"
        assert response.json()["history"][-1]["from"] == status
        [emitted] = await tap.emitted()
        assert f"user:{driver.id}" in emitted.rooms

    # And the driver is free again; the accepted bid stays the record of who was booked
    assert await market.active_ride_of(driver) is None
    assert response.json()["acceptedBid"]["status"] == "ACCEPTED"


@pytest.mark.parametrize("status", ["LOADING", "IN_TRANSIT", "DROPOFF_ARRIVED", "COMPLETED"])
async def test_a_customer_cannot_cancel_once_loading_has_started(
    market: Market, customer: Person, driver: Person, status: str
) -> None:
    # Given a ride the driver has moved up to `status`
    ride = await ride_at(market, customer, driver, status)

    # When the customer cancels it
    response = await market.cancel(customer, ride["id"])

    # Then it is refused as a transition and nothing changed
    assert assert_error(response, 409, "INVALID_TRANSITION") == {"from": status, "to": "CANCELLED"}
    assert (await market.read(customer, ride["id"]))["status"] == status
    assert await market.active_ride_of(driver) == (None if status == "COMPLETED" else ride["id"])


async def test_an_admin_cancels_a_ride_in_transit_and_the_driver_is_freed(
    market: Market, customer: Person, driver: Person
) -> None:
    # Given a ride in transit
    ride = await ride_at(market, customer, driver, "IN_TRANSIT")
    admin = await market.admin()

    # When an admin cancels it
    response = await market.cancel(admin, ride["id"], reason="vehicle breakdown")

    # Then it is CANCELLED by the admin and the driver is free
    assert response.status_code == 200, response.text
    assert response.json()["history"][-1] | {"at": None} == {
        "from": "IN_TRANSIT", "to": "CANCELLED", "by": {"id": admin.id, "role": "admin"}, "at": None,
        "reason": "vehicle breakdown"}
    assert await market.active_ride_of(driver) is None
    # And a final ride cannot be cancelled again, even by an admin
    again = await market.cancel(admin, ride["id"])
    assert assert_error(again, 409, "INVALID_TRANSITION") == {"from": "CANCELLED", "to": "CANCELLED"}


async def test_an_admin_cannot_cancel_a_completed_ride(
    market: Market, customer: Person, driver: Person
) -> None:
    ride = await ride_at(market, customer, driver, "COMPLETED")

    response = await market.cancel(await market.admin(), ride["id"])

    assert assert_error(response, 409, "INVALID_TRANSITION") == {"from": "COMPLETED", "to": "CANCELLED"}


async def test_a_driver_may_not_cancel_and_another_customer_does_not_find_the_ride(
    market: Market, customer: Person, driver: Person
) -> None:
    ride = await ride_at(market, customer, driver, "DRIVER_ARRIVING")

    assert_error(await market.cancel(driver, ride["id"]), 403, "FORBIDDEN")
    assert_error(await market.cancel(await market.customer(), ride["id"]), 404, "NOT_FOUND")
    assert (await market.read(customer, ride["id"]))["status"] == "DRIVER_ARRIVING"
    assert await market.active_ride_of(driver) == ride["id"]


async def test_a_cancel_body_is_optional_but_checked(market: Market, customer: Person) -> None:
    ride = await market.ride(customer)
    url = f"/api/v1/rides/{ride['id']}/cancel"

    refused = await market.api.post(url, json={"reason": "x", "refund": True}, headers=customer.headers)
    assert "refund" in assert_error(refused, 400, "VALIDATION_ERROR")
    response = await market.api.post(url, json={}, headers=customer.headers)
    assert response.status_code == 200, response.text
    assert response.json()["history"][-1]["reason"] is None
