"""Bids over HTTP: who may bid, list and accept, and that exactly one accept ever wins.

Real PostgreSQL and Redis; offers are written straight into the database as `dispatch.step` would.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text, update

from app.settings import Settings
from models import Driver, DriverAvailability
from tests.integration.conftest import AppFactory
from tests.integration.market_support import (
    BusTap,
    Call,
    Market,
    Person,
    assert_error,
    at_once,
    customer,
    market,
)
from tests.integration.payments_support import PayBench, paid_settings, pay, stripe_fake

__all__ = ["customer", "market", "paid_settings", "pay", "stripe_fake"]  # fixtures shared with other tests


@pytest.fixture
async def ride(market: Market, customer: Person) -> dict[str, Any]:
    return await market.ride(customer)


# --- placing a bid -----------------------------------------------------------------------------------
async def test_an_offered_driver_bids_and_the_customer_sees_it_live_and_in_the_list(
    market: Market, customer: Person, ride: dict[str, Any], settings: Settings
) -> None:
    # Given a driver the ride was offered to, and the customer following the ride's room
    driver = await market.driver()
    await market.offer(ride["id"], driver)

    async with BusTap(settings) as tap:
        # When the driver bids
        response = await market.bid(driver, ride["id"], amount=3150, eta_minutes=9)

        # Then the bid is created, pending, in the region's currency
        assert response.status_code == 201, response.text
        bid = response.json()
        assert bid == {"id": bid["id"], "rideId": ride["id"], "driverId": driver.id,
                       "price": {"amount": 3150, "currency": "EUR"}, "etaMinutes": 9,
                       "status": "PENDING", "at": bid["at"]}
        # And `bid:new` carrying the same bid went to the ride's room only
        emitted = await tap.emitted()
        assert [(e.event, e.rooms) for e in emitted] == [("bid:new", (f"ride:{ride['id']}",))]
        assert emitted[0].payload == bid

    # And the customer (and an admin) find it in the ride's bids
    for reader in (customer, await market.admin()):
        listed = await market.bids(reader, ride["id"])
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"items": [bid], "nextCursor": None}


async def test_bids_are_listed_newest_first(market: Market, customer: Person, ride: dict[str, Any]) -> None:
    # Given three drivers bidding one after the other
    placed = [await market.offered_bid(await market.driver(), ride["id"], amount=2000 + i) for i in range(3)]

    # When the customer lists the bids
    response = await market.bids(customer, ride["id"])

    # Then the newest comes first
    assert [b["id"] for b in response.json()["items"]] == [b["id"] for b in reversed(placed)]


async def test_a_driver_never_offered_the_ride_may_not_bid(market: Market, ride: dict[str, Any]) -> None:
    # Given a driver who was never offered the ride
    stranger = await market.driver()

    # When it bids
    response = await market.bid(stranger, ride["id"])

    # Then it is refused with 403 and nothing is stored
    assert_error(response, 403, "FORBIDDEN")
    assert await market.bid_statuses(ride["id"]) == {}


async def test_only_drivers_bid_and_an_unknown_ride_is_not_found(
    market: Market, customer: Person, ride: dict[str, Any]
) -> None:
    assert_error(await market.bid(customer, ride["id"]), 403, "FORBIDDEN")
    assert_error(await market.bid(await market.admin(), ride["id"]), 403, "FORBIDDEN")
    assert_error(await market.bid(await market.driver(), str(uuid.uuid4())), 404, "NOT_FOUND")


async def test_a_second_bid_by_the_same_driver_is_a_conflict(market: Market, ride: dict[str, Any]) -> None:
    # Given a driver that has bid on the ride
    driver = await market.driver()
    first = await market.offered_bid(driver, ride["id"], amount=2500)

    # When it bids again (even at another price)
    response = await market.bid(driver, ride["id"], amount=2300)

    # Then it is a 409 and its first bid stands alone
    assert_error(response, 409, "CONFLICT")
    assert await market.bid_statuses(ride["id"]) == {first["id"]: "PENDING"}


async def test_concurrent_bids_by_one_driver_store_one(market: Market, ride: dict[str, Any]) -> None:
    driver = await market.driver()
    await market.offer(ride["id"], driver)

    responses = await at_once([market.bid_call(driver, ride["id"], amount=2000 + i) for i in range(10)])

    assert sorted(r.status_code for r in responses) == [201] + [409] * 9
    assert len(await market.bid_statuses(ride["id"])) == 1


async def test_a_bid_in_another_currency_than_the_regions_is_a_conflict(
    market: Market, ride: dict[str, Any]
) -> None:
    driver = await market.driver()
    await market.offer(ride["id"], driver)

    response = await market.bid(driver, ride["id"], currency="USD")

    assert assert_error(response, 409, "CONFLICT") == {"currency": "EUR"}
    assert await market.bid_statuses(ride["id"]) == {}


PRICE_CASES = [
    # (region's currency, payment, amount, field refused or None, the reason given)
    ("EUR", "card", 49, "price.amount", "is below Stripe's minimum card charge of 0.50 EUR (50)"),
    ("EUR", "card", 50, None, None),
    ("EUR", "cash", 1, None, None),  # cash never reaches Stripe: its minimum does not bind
    ("EUR", "card", 100_000_000, "price.amount", "is above Stripe's maximum card charge (99999999)"),
    ("TND", "cash", 12345, "price.amount", "must be a multiple of 10: TND is charged in steps of 0.010 TND"),
    ("TND", "card", 12345, "price.amount", "must be a multiple of 10: TND is charged in steps of 0.010 TND"),
    ("TND", "card", 12340, None, None),
    ("ISK", "cash", 50050, "price.amount", "must be a multiple of 100: ISK is charged in steps of 1 ISK"),
    ("ISK", "card", 50000, None, None),
    ("JPY", "card", 49, "price.amount", "is below Stripe's minimum card charge of 50 JPY (50)"),
    ("JPY", "card", 2500, None, None),
    ("IQD", "card", 5000, "price.currency", "not charged by card"),  # ISO, but not at Stripe
    ("IQD", "cash", 5001, None, None),
]


@pytest.mark.parametrize(("currency", "method", "amount", "field", "reason"), PRICE_CASES,
                         ids=[f"{c}-{m}-{a}" for c, m, a, _, _ in PRICE_CASES])
async def test_a_price_stripe_would_refuse_is_a_validation_error_naming_the_field(
    pay: PayBench, currency: str, method: str, amount: int, field: str | None, reason: str | None
) -> None:
    # Given a region charging in `currency`, and a driver offered one of its card or cash rides
    await pay.market.region_currency(currency)
    customer = await pay.market.customer()
    ride = await (pay.card_ride(customer) if method == "card" else pay.market.ride(customer))
    driver = await pay.market.driver()
    await pay.market.offer(ride["id"], driver)

    # When the driver bids `amount` minor units
    response = await pay.market.bid(driver, ride["id"], amount=amount, currency=currency)

    # Then a price Stripe would refuse is a 400 naming the field, and nothing is stored
    if field is None:
        assert response.status_code == 201, response.text
        assert response.json()["price"] == {"amount": amount, "currency": currency}
        return
    assert assert_error(response, 400, "VALIDATION_ERROR") == {field: reason}
    assert await pay.market.bid_statuses(ride["id"]) == {}


@pytest.mark.parametrize("currency", ["ZZZ", "BGN", "XAU"], ids=["not-iso", "withdrawn", "no-minor-unit"])
async def test_a_bid_in_a_currency_we_dont_take_is_a_validation_error(
    market: Market, ride: dict[str, Any], currency: str
) -> None:
    driver = await market.driver()
    await market.offer(ride["id"], driver)

    response = await market.bid(driver, ride["id"], currency=currency)

    assert assert_error(response, 400, "VALIDATION_ERROR") == {"price.currency": "unknown ISO 4217 currency"}
    assert await market.bid_statuses(ride["id"]) == {}


async def test_a_bid_after_the_offer_expired_is_a_conflict(market: Market, ride: dict[str, Any]) -> None:
    # Given a driver whose offer's bid window closed a second ago
    driver = await market.driver()
    await market.offer(ride["id"], driver, expires_in=timedelta(seconds=-1))

    # When it bids
    response = await market.bid(driver, ride["id"])

    # Then it is too late
    assert "expiresAt" in assert_error(response, 409, "CONFLICT")
    assert await market.bid_statuses(ride["id"]) == {}


@pytest.mark.parametrize("how", ["accepted", "cancelled"])
async def test_a_bid_on_a_ride_no_longer_pending_bids_is_a_conflict(
    market: Market, customer: Person, ride: dict[str, Any], how: str
) -> None:
    # Given a driver offered the ride, and the ride leaving PENDING_BIDS before it bids
    late = await market.driver()
    await market.offer(ride["id"], late)
    if how == "accepted":
        winner = await market.offered_bid(await market.driver(), ride["id"])
        assert (await market.accept(customer, ride["id"], winner["id"])).status_code == 200
    else:
        assert (await market.cancel(customer, ride["id"])).status_code == 200

    # When the late driver bids
    response = await market.bid(late, ride["id"])

    # Then the ride is no longer open
    assert assert_error(response, 409, "CONFLICT") == {
        "status": "BID_ACCEPTED" if how == "accepted" else "CANCELLED"}


@pytest.mark.parametrize(
    "body",
    [
        {"price": {"amount": 0, "currency": "EUR"}, "etaMinutes": 5},
        {"price": {"amount": 100, "currency": "eur"}, "etaMinutes": 5},
        {"price": {"amount": 100, "currency": "EUR"}, "etaMinutes": -1},
        {"price": {"amount": 100, "currency": "EUR"}},
        {"price": {"amount": 100, "currency": "EUR"}, "etaMinutes": 5, "tip": 1},
    ],
    ids=["zero-amount", "lowercase-currency", "negative-eta", "missing-eta", "unknown-field"],
)
async def test_a_malformed_bid_is_a_validation_error(
    market: Market, ride: dict[str, Any], body: dict[str, Any]
) -> None:
    driver = await market.driver()
    await market.offer(ride["id"], driver)

    response = await market.api.post(f"/api/v1/rides/{ride['id']}/bids", json=body, headers=driver.headers)

    assert_error(response, 400, "VALIDATION_ERROR")


# --- listing bids ------------------------------------------------------------------------------------
async def test_a_driver_who_sees_the_ride_may_not_list_its_bids_and_others_do_not_find_it(
    market: Market, ride: dict[str, Any]
) -> None:
    # Given a driver offered the ride (it may see the ride), another customer, another driver
    offered = await market.driver()
    await market.offered_bid(offered, ride["id"])

    # Then the offered driver is forbidden, the others find nothing
    assert_error(await market.bids(offered, ride["id"]), 403, "FORBIDDEN")
    assert_error(await market.bids(await market.customer(), ride["id"]), 404, "NOT_FOUND")
    assert_error(await market.bids(await market.driver(), ride["id"]), 404, "NOT_FOUND")


# --- accepting a bid ---------------------------------------------------------------------------------
async def test_the_customer_accepts_a_bid_the_driver_is_assigned_and_the_others_are_rejected(
    market: Market, customer: Person, ride: dict[str, Any], settings: Settings
) -> None:
    # Given three bids on the ride
    drivers = [await market.driver() for _ in range(3)]
    bids = [await market.offered_bid(d, ride["id"], amount=2000 + 100 * i) for i, d in enumerate(drivers)]
    chosen, chosen_driver = bids[1], drivers[1]

    async with BusTap(settings) as tap:
        # When the customer accepts the second
        response = await market.accept(customer, ride["id"], chosen["id"])

        # Then the ride is BID_ACCEPTED with that driver and bid
        assert response.status_code == 200, response.text
        accepted = response.json()
        assert accepted["status"] == "BID_ACCEPTED"
        assert accepted["driverId"] == chosen_driver.id
        assert accepted["acceptedBid"] == {**chosen, "status": "ACCEPTED"}
        assert accepted["history"][-1] | {"at": None} == {
            "from": "PENDING_BIDS", "to": "BID_ACCEPTED", "by": {"id": customer.id, "role": "customer"},
            "at": None, "reason": None}
        # And `ride:status` went to the ride's room and both users' rooms (the driver learns it won)
        emitted = await tap.emitted()
        assert [(e.event, set(e.rooms)) for e in emitted] == [
            ("ride:status", {f"ride:{ride['id']}", f"user:{customer.id}", f"user:{chosen_driver.id}"})]
        assert emitted[0].payload == {"rideId": ride["id"], "status": "BID_ACCEPTED", "from": "PENDING_BIDS",
                                      "by": {"id": customer.id, "role": "customer"},
                                      "at": accepted["history"][-1]["at"]}

    # And the other bids are rejected, the driver is busy with this ride
    assert await market.bid_statuses(ride["id"]) == {
        bids[0]["id"]: "REJECTED", chosen["id"]: "ACCEPTED", bids[2]["id"]: "REJECTED"}
    assert await market.active_ride_of(chosen_driver) == ride["id"]
    assert [await market.active_ride_of(d) for d in (drivers[0], drivers[2])] == [None, None]
    # And the assigned driver now reads the ride with its accepted bid
    assert (await market.read(chosen_driver, ride["id"]))["acceptedBid"]["id"] == chosen["id"]


async def test_only_the_rides_customer_accepts(
    market: Market, customer: Person, ride: dict[str, Any]
) -> None:
    # Given a bid on the ride
    driver = await market.driver()
    bid = await market.offered_bid(driver, ride["id"])

    # Then the bidding driver and an admin are forbidden, another customer finds nothing
    assert_error(await market.accept(driver, ride["id"], bid["id"]), 403, "FORBIDDEN")
    assert_error(await market.accept(await market.admin(), ride["id"], bid["id"]), 403, "FORBIDDEN")
    assert_error(await market.accept(await market.customer(), ride["id"], bid["id"]), 404, "NOT_FOUND")
    # And a bid id that is not this ride's is not found
    other_ride = await market.ride(customer)
    other_bid = await market.offered_bid(await market.driver(), other_ride["id"])
    assert_error(await market.accept(customer, ride["id"], other_bid["id"]), 404, "NOT_FOUND")
    # And nothing changed
    assert (await market.read(customer, ride["id"]))["status"] == "PENDING_BIDS"
    assert await market.bid_statuses(ride["id"]) == {bid["id"]: "PENDING"}


async def test_accepting_again_after_a_win_is_a_conflict(
    market: Market, customer: Person, ride: dict[str, Any]
) -> None:
    first, second = [await market.offered_bid(await market.driver(), ride["id"]) for _ in range(2)]
    assert (await market.accept(customer, ride["id"], first["id"])).status_code == 200

    assert_error(await market.accept(customer, ride["id"], second["id"]), 409, "CONFLICT")
    assert_error(await market.accept(customer, ride["id"], first["id"]), 409, "CONFLICT")
    assert await market.bid_statuses(ride["id"]) == {first["id"]: "ACCEPTED", second["id"]: "REJECTED"}


async def test_fifty_concurrent_accepts_of_fifty_bids_have_exactly_one_winner(
    market: Market, customer: Person, ride: dict[str, Any], settings: Settings, make_client: AppFactory
) -> None:
    # Given fifty drivers who bid on the ride, and five web processes
    drivers = [await market.driver() for _ in range(50)]
    bids = [await market.offered_bid(d, ride["id"], amount=2000 + i) for i, d in enumerate(drivers)]
    clients = [market.api, *[await make_client(settings) for _ in range(4)]]

    # When the customer accepts all fifty at once, spread over the processes
    responses = await at_once([
        Call(clients[i % len(clients)], "POST", market.accept_url(ride["id"], bid["id"]), customer.headers)
        for i, bid in enumerate(bids)])

    # Then exactly one accept wins and the 49 others are clean 409 CONFLICTs
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 49}, [r.text for r in responses
                                                                          if r.status_code not in (200, 409)]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "CONFLICT")
    winner = next(r.json() for r in responses if r.status_code == 200)
    winning_bid = winner["acceptedBid"]["id"]
    # And the database holds one ACCEPTED bid, 49 REJECTED, and only the winner's driver is busy
    statuses = await market.bid_statuses(ride["id"])
    assert Counter(statuses.values()) == {"ACCEPTED": 1, "REJECTED": 49}
    assert statuses[winning_bid] == "ACCEPTED"
    busy = [d for d in drivers if await market.active_ride_of(d) is not None]
    assert [d.id for d in busy] == [winner["driverId"]]
    assert await market.active_ride_of(busy[0]) == ride["id"]
    # And the history records one accept
    assert [row[:2] for row in await market.history_rows(ride["id"])] == [
        (None, "PENDING_BIDS"), ("PENDING_BIDS", "BID_ACCEPTED")]


async def test_a_driver_busy_on_another_ride_cannot_be_accepted_and_nothing_changes(
    market: Market, customer: Person, settings: Settings
) -> None:
    # Given a driver who bid on two rides and was accepted on the first
    driver = await market.driver()
    first = await market.ride(customer)
    other_customer = await market.customer()
    second = await market.ride(other_customer)
    first_bid = await market.offered_bid(driver, first["id"])
    second_bid = await market.offered_bid(driver, second["id"])
    rival_bid = await market.offered_bid(await market.driver(), second["id"])
    assert (await market.accept(customer, first["id"], first_bid["id"])).status_code == 200

    async with BusTap(settings) as tap:
        # When the second ride's customer accepts that driver's bid
        response = await market.accept(other_customer, second["id"], second_bid["id"])

        # Then it is a 409 CONFLICT and nothing was published
        assert assert_error(response, 409, "CONFLICT") == {"reason": "DRIVER_BUSY", "driverId": driver.id}
        assert await tap.emitted() == []

    # And nothing changed: the second ride still takes bids, its bids are open, the driver keeps the first
    after = await market.read(other_customer, second["id"])
    assert (after["status"], after["driverId"], after["acceptedBid"]) == ("PENDING_BIDS", None, None)
    assert len(after["history"]) == 1
    assert await market.bid_statuses(second["id"]) == {
        second_bid["id"]: "PENDING", rival_bid["id"]: "PENDING"}
    assert await market.active_ride_of(driver) == first["id"]
    # And the rival's bid can still be accepted
    assert (await market.accept(other_customer, second["id"], rival_bid["id"])).status_code == 200


async def test_two_rides_accepting_the_same_driver_at_once_assign_it_once(
    market: Market, customer: Person
) -> None:
    # Given one driver bidding on two customers' rides
    driver = await market.driver()
    other_customer = await market.customer()
    rides = [await market.ride(customer), await market.ride(other_customer)]
    bids = [await market.offered_bid(driver, r["id"]) for r in rides]

    # When both customers accept its bid at the same moment
    responses = await at_once([
        Call(market.api, "POST", market.accept_url(rides[0]["id"], bids[0]["id"]), customer.headers),
        Call(market.api, "POST", market.accept_url(rides[1]["id"], bids[1]["id"]), other_customer.headers)])

    # Then one wins, the other is a 409, and the driver is busy with the winner's ride only
    assert sorted(r.status_code for r in responses) == [200, 409]
    won = next(r.json() for r in responses if r.status_code == 200)
    assert await market.active_ride_of(driver) == won["id"]


async def _make_unavailable(market: Market, driver: Person, how: str) -> None:
    if how == "offline":
        response = await market.api.post("/api/v1/drivers/me/offline", headers=driver.headers)
    else:
        admin = await market.admin()
        response = await market.api.post(f"/api/v1/admin/drivers/{driver.id}/suspend",
                                         json={"reason": "documents expired"}, headers=admin.headers)
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(("how", "reason"), [("offline", "DRIVER_OFFLINE"),
                                            ("suspended", "DRIVER_SUSPENDED")])
async def test_a_bid_whose_driver_went_offline_or_was_suspended_cannot_be_accepted_and_nothing_changes(
    market: Market, customer: Person, ride: dict[str, Any], settings: Settings, how: str, reason: str
) -> None:
    # Given two bids on the ride, and the first bidder then goes offline (or is suspended)
    gone, rival = await market.driver(), await market.driver()
    gone_bid = await market.offered_bid(gone, ride["id"])
    rival_bid = await market.offered_bid(rival, ride["id"])
    await _make_unavailable(market, gone, how)

    async with BusTap(settings) as tap:
        # When the customer accepts that driver's bid
        response = await market.accept(customer, ride["id"], gone_bid["id"])

        # Then it is a 409 CONFLICT naming why, with a message the customer can act on
        details = assert_error(response, 409, "CONFLICT")
        assert details == {"reason": reason, "driverId": gone.id}
        assert "accept another bid" in response.json()["error"]["message"]
        assert await tap.emitted() == []

    # And nothing changed: the ride takes bids, both bids are open, nobody is busy
    after = await market.read(customer, ride["id"])
    assert (after["status"], after["driverId"], len(after["history"])) == ("PENDING_BIDS", None, 1)
    assert await market.bid_statuses(ride["id"]) == {gone_bid["id"]: "PENDING", rival_bid["id"]: "PENDING"}
    assert await market.active_ride_of(gone) is None
    # And the rival (online, free) can still be accepted
    assert (await market.accept(customer, ride["id"], rival_bid["id"])).status_code == 200


async def test_a_driver_going_offline_while_the_accept_runs_is_not_taken(
    market: Market, customer: Person, ride: dict[str, Any]
) -> None:
    """The availability is the take's own condition: a driver online when the accept starts but
    offline by the time its UPDATE gets the driver's row is refused, not assigned."""
    driver = await market.driver()
    bid = await market.offered_bid(driver, ride["id"])

    # Given the driver's going offline is under way (its row updated, not yet committed)
    going_offline = market.db()
    going_offline.execute(update(Driver).where(Driver.user_id == uuid.UUID(driver.id))
                          .values(availability=DriverAvailability.OFFLINE))
    try:
        # When the customer accepts meanwhile: the accept's take waits on the driver's row
        accept = asyncio.create_task(at_once([
            Call(market.api, "POST", market.accept_url(ride["id"], bid["id"]), customer.headers)]))
        await _until_a_statement_waits_on_a_lock(market, "UPDATE drivers")
        # And the driver's going offline commits
        going_offline.commit()
    finally:
        going_offline.close()
    [response] = await accept

    # Then the accept is refused for an offline driver and nothing changed
    assert assert_error(response, 409, "CONFLICT")["reason"] == "DRIVER_OFFLINE"
    assert (await market.read(customer, ride["id"]))["status"] == "PENDING_BIDS"
    assert await market.bid_statuses(ride["id"]) == {bid["id"]: "PENDING"}
    assert await market.active_ride_of(driver) is None


async def _until_a_statement_waits_on_a_lock(market: Market, statement: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with market.db() as session:
            waiting = session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE :statement"), {"statement": f"{statement}%"})
        if waiting:
            return
        assert time.monotonic() < deadline, f"no {statement!r} came to wait on a lock"
        await asyncio.sleep(0.02)
