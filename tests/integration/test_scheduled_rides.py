"""Rides booked ahead (`POST /rides` with `scheduledFor`) on the real PostgreSQL, Redis and a real
worker: stored at once, answered with their pickup time, dispatched from a due row of the job ledger
`DISPATCH_SCHEDULE_LEAD` before it, and never offered earlier.

Nothing sleeps: a ride due soon is booked through a web whose minimum notice is one second, and
each wait polls the real condition (`wait_for`, generous deadlines).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from app.services import dispatch_reconcile
from app.services.notifications import pickup_time
from app.settings import Settings
from app.timestamps import rfc3339
from models import Job, NotificationRequest, Offer, Ride
from tests.integration.conftest import Accounts, AppFactory
from tests.integration.market_support import BusTap, Market, Person, assert_error, customer, market
from tests.integration.rides_support import PICKUP, offset_km, ride_body
from tests.integration.workers_support import DEADLINE_S, db_fixture, start_worker_fixture, wait_for

__all__ = ["customer", "db_fixture", "market", "start_worker_fixture"]

RIDES = "/api/v1/rides"
#: The short lead of the web that books rides due in seconds (`soon`).
SHORT_LEAD_S = 60
BERLIN_WINTER = timezone(timedelta(hours=1))


def ahead(**delta: float) -> datetime:
    """A moment `delta` from now, to the second (as an app would send it)."""
    return (datetime.now(UTC) + timedelta(**delta)).replace(microsecond=0)


async def book(market: Market, who: Person, scheduled_for: Any) -> httpx.Response:
    body = ride_body(scheduledFor=scheduled_for) if scheduled_for is not None else ride_body()
    return await market.api.post(RIDES, json=body, headers=who.headers)


async def booked(market: Market, who: Person, scheduled_for: datetime | None = None) -> dict[str, Any]:
    response = await book(market, who, rfc3339(scheduled_for) if scheduled_for else None)
    assert response.status_code == 201, response.text
    ride: dict[str, Any] = response.json()
    return ride


def first_round(market: Market, ride_id: str) -> Job | None:
    """The ride's `dispatch.step(ride, 0)` row of the job ledger."""
    with market.db() as session:
        steps = session.scalars(select(Job).where(Job.actor == "dispatch.step")).all()
    return next((job for job in steps if job.args == [ride_id, 0]), None)


def offers_of(market: Market, ride_id: str) -> list[Offer]:
    with market.db() as session:
        return list(session.scalars(select(Offer).where(Offer.ride_id == uuid.UUID(ride_id))))


async def driver_at_pickup(market: Market) -> Person:
    """An online van driver one kilometre from the pickup, indexed as its app would get it there."""
    driver = await market.driver()
    lat, lng = offset_km(PICKUP, 1.0)
    response = await market.api.put("/api/v1/drivers/me/location", json={"lat": lat, "lng": lng},
                                    headers=driver.headers)
    assert response.status_code == 204, response.text
    return driver


@pytest.fixture
async def soon(make_client: AppFactory, settings: Settings) -> AsyncIterator[Market]:
    """A market whose web books rides one second ahead and dispatches them a minute before."""
    quick = dataclasses.replace(settings, dispatch=dataclasses.replace(
        settings.dispatch, schedule_min_ahead_s=1, schedule_lead_s=SHORT_LEAD_S))
    client = await make_client(quick)
    market = Market(client, Accounts(client), quick)
    try:
        await market.region()
        yield market
    finally:
        market.close()


# --- booking -------------------------------------------------------------------------------------
async def test_a_ride_booked_ahead_is_stored_with_its_first_round_due_the_lead_before(
    market: Market, customer: Person, settings: Settings
) -> None:
    # When a customer books a ride for two hours from now (its offset is not UTC)
    wanted = ahead(hours=2)
    response = await book(market, customer, wanted.astimezone(BERLIN_WINTER).isoformat())

    # Then it is stored as PENDING_BIDS at once and answers its pickup time, in UTC
    assert response.status_code == 201, response.text
    ride = response.json()
    assert ride["status"] == "PENDING_BIDS" and ride["dispatchRound"] == 0
    assert ride["scheduledFor"] == rfc3339(wanted)
    # And reading it, alone or in the list, says so too
    assert (await market.read(customer, ride["id"]))["scheduledFor"] == rfc3339(wanted)
    listed = (await market.api.get(RIDES, headers=customer.headers)).json()["items"]
    assert [(r["id"], r["scheduledFor"]) for r in listed] == [(ride["id"], rfc3339(wanted))]
    # And its first round is a ledger row due DISPATCH_SCHEDULE_LEAD before the pickup
    job = first_round(market, ride["id"])
    assert job is not None and job.state == "waiting"
    assert job.due_at == wanted - timedelta(seconds=settings.dispatch.schedule_lead_s)
    # And the customer is told the ride is booked for then, not that drivers are being asked
    with market.db() as session:
        note = session.scalars(select(NotificationRequest)).one()
    assert note.template == "ride_scheduled"
    assert f"booked for {pickup_time(wanted)}" in note.body and "asking drivers" not in note.body



async def test_an_immediate_ride_answers_no_pickup_time_and_its_first_round_is_due_at_once(
    market: Market, customer: Person
) -> None:
    ride = await booked(market, customer)

    assert ride["scheduledFor"] is None
    job = first_round(market, ride["id"])
    assert job is not None and job.due_at == job.created_at
    with market.db() as session:
        assert session.scalars(select(NotificationRequest.template)).all() == ["booking_confirmed"]


@pytest.mark.parametrize(("when", "problem"), [
    (lambda: rfc3339(ahead(hours=-1)), "at least 15 min"),
    (lambda: rfc3339(ahead(minutes=5)), "at least 15 min"),
    (lambda: rfc3339(ahead(days=31)), "at most 30 days"),
    (lambda: "tomorrow at three", "RFC3339"),
    (lambda: ahead(hours=2).replace(tzinfo=None).isoformat(), "timezone"),
], ids=["past", "too-soon", "too-far", "not-a-time", "no-offset"])
async def test_a_pickup_time_out_of_the_window_or_badly_written_is_refused_and_nothing_is_stored(
    market: Market, customer: Person, when: Any, problem: str
) -> None:
    response = await book(market, customer, when())

    details = assert_error(response, 400, "VALIDATION_ERROR")
    assert problem in details["scheduledFor"], details
    with market.db() as session:
        assert session.scalars(select(Ride.id)).all() == []
        assert session.scalars(select(Job.id)).all() == []


async def test_a_ride_booked_ahead_counts_as_open_and_may_be_cancelled_before_its_rounds(
    make_client: AppFactory, settings: Settings
) -> None:
    limits = dataclasses.replace(settings.limits, open_rides_per_customer=1)
    capped = dataclasses.replace(settings, limits=limits)
    client = await make_client(capped)
    market = Market(client, Accounts(client), capped)
    try:
        await market.region()
        customer = await market.customer()
        # Given a ride booked for tomorrow
        ride = await booked(market, customer, ahead(days=1))

        # Then it is open: a second ride is refused by the cap
        refused = assert_error(await book(market, customer, None), 409, "CONFLICT")
        assert refused["reason"] == "OPEN_RIDE_LIMIT"
        # When the customer cancels it, waiting for its rounds
        response = await market.cancel(customer, ride["id"], "plans changed")
        # Then it is cancelled and another ride may be booked
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELLED"
        assert response.json()["scheduledFor"] == ride["scheduledFor"]
        assert (await book(market, customer, None)).status_code == 201
    finally:
        market.close()


async def test_a_ride_booked_sooner_than_the_lead_is_dispatched_at_once(soon: Market) -> None:
    ride = await booked(soon, await soon.customer(), ahead(seconds=SHORT_LEAD_S / 2))

    job = first_round(soon, ride["id"])
    assert job is not None and job.due_at == job.created_at


async def test_the_customer_and_the_driver_are_told_the_pickup_time_when_a_bid_is_accepted(
    market: Market, customer: Person
) -> None:
    # Given a ride booked for tomorrow, offered to a driver who bid
    wanted = ahead(days=1)
    ride = await booked(market, customer, wanted)
    driver = await market.driver()
    bid = await market.offered_bid(driver, ride["id"], eta_minutes=7)

    # When the customer accepts the bid
    response = await market.accept(customer, ride["id"], bid["id"])

    # Then both are told when the pickup is, not that it is minutes away
    assert response.status_code == 200, response.text
    with market.db() as session:
        bodies = dict(session.execute(select(NotificationRequest.template, NotificationRequest.body)).all())
    assert bodies["driver_assigned"].endswith(f"at {pickup_time(wanted)}.")
    assert bodies["bid_accepted"].endswith(f"at {pickup_time(wanted)}.")
    assert "7 min" not in bodies["driver_assigned"]


# --- dispatch --------------------------------------------------------------------------------------
async def test_a_ride_booked_ahead_is_not_offered_while_its_first_round_is_not_due(
    market: Market, customer: Person, start_worker: Any, settings: Settings
) -> None:
    # Given a worker and an online driver at the pickup
    start_worker(relay=settings)
    driver = await driver_at_pickup(market)

    # When a ride is booked for two hours from now, and then another for now
    later = await booked(market, customer, ahead(hours=2))
    now = await booked(market, await market.customer())

    # Then the worker offers the driver the ride for now (so it has run since both were written)
    wait_for(lambda: offers_of(market, now["id"]), what="the immediate ride's first round")
    # And not the ride booked ahead: its first round still waits in the ledger, unclaimed
    assert offers_of(market, later["id"]) == []
    job = first_round(market, later["id"])
    assert job is not None and job.state == "waiting" and job.due_at > datetime.now(UTC)
    with market.db() as session:
        assert session.get_one(Ride, uuid.UUID(later["id"])).dispatch_round is None
    # And the driver sees only the ride it was offered
    seen = (await market.api.get(RIDES, headers=driver.headers)).json()["items"]
    assert [r["id"] for r in seen] == [now["id"]]


async def test_when_its_first_round_falls_due_the_ride_is_offered_to_a_driver_nearby(
    soon: Market, start_worker: Any, settings: Settings
) -> None:
    # Given a worker and an online driver at the pickup
    start_worker(relay=settings)
    driver = await driver_at_pickup(soon)
    customer = await soon.customer()
    async with BusTap(settings) as bus:
        # When a ride is booked for a minute and a few seconds from now: its round falls due in seconds
        wanted = ahead(seconds=SHORT_LEAD_S + 4)
        ride = await booked(soon, customer, wanted)
        job = first_round(soon, ride["id"])
        assert job is not None and job.due_at == wanted - timedelta(seconds=SHORT_LEAD_S)

        # Then, once it is due and not before, the worker runs the round and offers the driver the ride
        [offer] = wait_for(lambda: offers_of(soon, ride["id"]), what="the ride's first round",
                           timeout=DEADLINE_S + SHORT_LEAD_S)
        assert (offer.driver_id, offer.round) == (uuid.UUID(driver.id), 0)
        assert offer.created_at >= job.due_at
        # And the driver's app is sent the offer with the pickup time it bids for
        emitted = await bus.until("ride:offer")
        [payload] = [e.payload for e in emitted if e.event == "ride:offer"]
        assert payload["rideId"] == ride["id"] and payload["scheduledFor"] == rfc3339(wanted)
    # And the driver sees the ride, booked for then, among its offers
    seen = (await soon.api.get(RIDES, headers=driver.headers)).json()["items"]
    assert [(r["id"], r["scheduledFor"]) for r in seen] == [(ride["id"], rfc3339(wanted))]


# --- nothing stranded ------------------------------------------------------------------------------
def reconcile_at(market: Market, settings: Settings, moment: datetime) -> int:
    """`rides.reconcile` as the clock would run it at `moment`; how many rounds it sent again."""
    with market.db.begin() as session:
        return dispatch_reconcile.reconcile(session, settings, now=moment).steps


async def test_the_reconciler_waits_for_a_ride_booked_ahead_and_recovers_its_round_if_lost(
    market: Market, customer: Person, settings: Settings
) -> None:
    # Given a ride booked for two hours from now whose first round's row was lost
    wanted = ahead(hours=2)
    ride = await booked(market, customer, wanted)
    due = wanted - timedelta(seconds=settings.dispatch.schedule_lead_s)
    with market.db.begin() as session:
        session.execute(delete(Job).where(Job.actor == "dispatch.step"))

    # When the reconciler runs while the round is not yet due (and just after, within its grace)
    # Then it sends nothing: a round sent now would offer the ride early
    for moment in (datetime.now(UTC) + timedelta(minutes=5), due - timedelta(seconds=1),
                   due + timedelta(seconds=10)):
        assert reconcile_at(market, settings, moment) == 0
    assert first_round(market, ride["id"]) is None

    # When it runs once the round is overdue
    # Then the round is sent again, as for any ride whose first round never started
    assert reconcile_at(market, settings, due + timedelta(minutes=1)) == 1
    job = first_round(market, ride["id"])
    assert job is not None and job.state == "waiting"
