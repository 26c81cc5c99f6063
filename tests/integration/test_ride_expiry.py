"""Rides that end by themselves: bids nobody accepted in time, a card hold nobody authorized in time.

Real PostgreSQL, Redis and the Stripe fake. The expiry jobs' service functions run with an explicit
`now` (deterministic); one test runs the acceptance window through a real worker with a one-second
window.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.stripe_gateway import StripeGateway
from app.db import UnitOfWork
from app.services import dispatch, ride_expiry
from app.settings import Settings
from models import Job, NotificationRequest, Ride, RideStatus
from tests.fakes.stripe_server import FakeStripe
from tests.integration.conftest import AppFactory
from tests.integration.market_support import BusTap, Market, Person, assert_error, customer, market
from tests.integration.payments_support import PayBench, paid_settings, pay, stripe_fake
from tests.integration.workers_support import WorkerFactory, db_fixture, start_worker_fixture, wait_for
from workers.resources import get_resources

__all__ = ["customer", "db_fixture", "market", "paid_settings", "pay", "start_worker_fixture",
           "stripe_fake"]  # fixtures

SYSTEM = {"id": None, "role": "system"}


class Emitted(list[tuple[str, dict[str, Any], Any]]):
    def __call__(self, event: str, payload: dict[str, Any], room: Any) -> None:
        self.append((event, payload, room))


AfterCommit = Callable[[Callable[[], None]], None]


def rooms_of(room: Any) -> set[str]:
    return {room} if isinstance(room, str) else set(room)


def run(db: sessionmaker[Session], action: Callable[[Session, AfterCommit], Any]) -> Any:
    """Run a job's service function in its own unit of work; its after-commit actions run after."""
    uow = UnitOfWork(db())
    try:
        result = action(uow.session, uow.after_commit)
        uow.commit()
        return result
    finally:
        uow.close()


def check_bids(market: Market, settings: Settings, ride_id: str, emitted: Emitted) -> dispatch.CheckResult:
    """Round 0's bid window closes (as `dispatch.check_bids` runs it)."""
    with market.db.begin() as session:
        session.get_one(Ride, uuid.UUID(ride_id)).dispatch_round = 0
    return run(market.db, lambda s, after: dispatch.check_bids(
        s, settings.dispatch, uuid.UUID(ride_id), 0, after_commit=after, emit=emitted,
        twilio=settings.twilio))


def expire_bids(market: Market, settings: Settings, ride_id: str, round_: int, now: datetime,
                emitted: Emitted) -> bool:
    return bool(run(market.db, lambda s, after: ride_expiry.expire_bids(
        s, settings, uuid.UUID(ride_id), round_, now=now, after_commit=after, emit=emitted)))


def checked_at(market: Market, ride_id: str) -> datetime:
    with market.db() as session:
        return session.get_one(Ride, uuid.UUID(ride_id)).updated_at


def templates(market: Market, user: Person) -> list[str]:
    with market.db() as session:
        return sorted(session.scalars(select(NotificationRequest.template)
                                      .where(NotificationRequest.user_id == uuid.UUID(user.id))))


def delayed_jobs(market: Market, actor: str) -> list[tuple[list[Any], Any]]:
    with market.db() as session:
        rows = session.scalars(select(Job).where(Job.actor == actor)).all()
    return [(list(row.args), round((row.due_at - row.created_at).total_seconds() * 1000) or None)
            for row in rows]


# --- the acceptance window ---------------------------------------------------------------------
async def test_bids_nobody_accepts_end_the_ride_when_the_acceptance_window_closes(
    market: Market, customer: Person, settings: Settings
) -> None:
    # Given a ride with two bids whose round's check told the customer they are ready
    ride = await market.ride(customer)
    drivers = [await market.driver() for _ in range(2)]
    bids = [await market.offered_bid(d, ride["id"]) for d in drivers]
    emitted = Emitted()
    assert check_bids(market, settings, ride["id"], emitted).outcome == "bids_ready"
    window = settings.dispatch.accept_window_s
    # Then the window's end was scheduled with it, as a delayed job
    assert delayed_jobs(market, "rides.expire_bids") == [([ride["id"], 0], window * 1000)]
    started = checked_at(market, ride["id"])

    # When the job comes before the window closed, or for another round: nothing happens
    assert not expire_bids(market, settings, ride["id"], 0, started + timedelta(seconds=window - 5), emitted)
    assert not expire_bids(market, settings, ride["id"], 1, started + timedelta(seconds=window), emitted)
    assert (await market.read(customer, ride["id"]))["status"] == "PENDING_BIDS"

    # When the window has closed and still no bid was accepted
    emitted.clear()
    assert expire_bids(market, settings, ride["id"], 0, started + timedelta(seconds=window), emitted)

    # Then the system cancelled the ride, saying why, and the live bids are rejected
    after = await market.read(customer, ride["id"])
    assert after["status"] == "CANCELLED"
    last = after["history"][-1]
    assert (last["from"], last["to"], last["by"], last["reason"]) == (
        "PENDING_BIDS", "CANCELLED", SYSTEM, "no bid was accepted in time")
    assert await market.bid_statuses(ride["id"]) == {b["id"]: "REJECTED" for b in bids}
    # And `ride:status` went to the ride's and the customer's rooms (and `map:ride` to the region's
    # live map, which the publisher sends only while an admin watches it)
    assert [(e, p["status"], p.get("by"), rooms_of(r)) for e, p, r in emitted] == [
        ("ride:status", "CANCELLED", SYSTEM, {f"ride:{ride['id']}", f"user:{customer.id}"}),
        ("map:ride", "CANCELLED", None, {"map:BER"})]
    # And the customer is told, once, even if the job comes again
    assert not expire_bids(market, settings, ride["id"], 0, started + timedelta(seconds=window + 60), emitted)
    assert templates(market, customer) == ["bids_expired", "bids_ready", "booking_confirmed"]
    # And a bid or an accept now is refused
    assert_error(await market.accept(customer, ride["id"], bids[0]["id"]), 409, "CONFLICT")


async def test_a_ride_accepted_or_cancelled_within_the_window_is_left_alone(
    market: Market, customer: Person, settings: Settings
) -> None:
    accepted, cancelled = await market.ride(customer), await market.ride(customer)
    driver = await market.driver()
    bid = await market.offered_bid(driver, accepted["id"])
    await market.offered_bid(await market.driver(), cancelled["id"])
    for ride in (accepted, cancelled):
        assert check_bids(market, settings, ride["id"], Emitted()).outcome == "bids_ready"
    assert (await market.accept(customer, accepted["id"], bid["id"])).status_code == 200
    assert (await market.cancel(customer, cancelled["id"], "found a lift")).status_code == 200

    late = checked_at(market, cancelled["id"]) + timedelta(seconds=settings.dispatch.accept_window_s + 60)
    for ride in (accepted, cancelled):
        assert not expire_bids(market, settings, ride["id"], 0, late, Emitted())

    assert (await market.read(customer, accepted["id"]))["status"] == "BID_ACCEPTED"
    history = (await market.read(customer, cancelled["id"]))["history"]
    assert [(h["to"], h["by"]["role"]) for h in history] == [("PENDING_BIDS", "customer"),
                                                              ("CANCELLED", "customer")]
    assert "bids_expired" not in templates(market, customer)


async def test_the_acceptance_window_runs_through_a_real_worker(
    market: Market, customer: Person, settings: Settings, start_worker: WorkerFactory
) -> None:
    # Given a worker whose acceptance window is one second
    quick = dataclasses.replace(settings, dispatch=dataclasses.replace(settings.dispatch, accept_window_s=1))
    resources = get_resources()
    saved, resources.settings = resources.settings, quick
    try:
        ride = await market.ride(customer)
        bid = await market.offered_bid(await market.driver(), ride["id"])
        with market.db.begin() as session:  # the ride's own dispatch job is not this test's business
            session.execute(delete(Job))
        async with BusTap(settings) as tap:
            start_worker(relay=quick)

            # When the round's bid check finds the bid and nobody accepts it
            check_bids(market, quick, ride["id"], Emitted())

            # Then within a second or so the ride is cancelled by the system
            def cancelled() -> bool:
                with market.db() as session:
                    return session.get_one(Ride, uuid.UUID(ride["id"])).status == RideStatus.CANCELLED

            wait_for(cancelled, what="the acceptance window to close")
            statuses = [e.payload for e in await tap.until("ride:status") if e.event == "ride:status"]
    finally:
        resources.settings = saved
    assert [(p["status"], p["by"]) for p in statuses] == [("CANCELLED", SYSTEM)]
    assert await market.bid_statuses(ride["id"]) == {bid["id"]: "REJECTED"}
    assert "bids_expired" in templates(market, customer)


# --- the hold timeout --------------------------------------------------------------------------
def expire_hold(pay: PayBench, ride_id: str, now: datetime, emitted: Emitted) -> bool:
    return bool(run(pay.market.db, lambda s, after: ride_expiry.expire_hold(
        s, pay.settings, uuid.UUID(ride_id), now=now, after_commit=after, emit=emitted)))


def accepted_at(pay: PayBench, ride_id: str) -> datetime:
    return pay.payment(ride_id).created_at


async def test_a_card_hold_not_authorized_in_time_cancels_the_ride_and_releases_the_hold(
    pay: PayBench,
) -> None:
    # Given a card ride accepted, its hold created but never confirmed by the customer
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)
    timeout = pay.settings.stripe.hold_timeout_s
    assert delayed_jobs(pay.market, "rides.expire_hold") == [([ride_id], timeout * 1000)]  # with the accept
    pay.run_queued("payments.authorize")
    intent_id = pay.payment(ride_id).payment_intent_id or ""
    emitted = Emitted()

    # When the hold timeout is not over yet: nothing happens
    assert not expire_hold(pay, ride_id, accepted_at(pay, ride_id) + timedelta(seconds=timeout - 5), emitted)
    assert (await pay.market.read(customer, ride_id))["status"] == "BID_ACCEPTED"

    # When it is over
    assert expire_hold(pay, ride_id, accepted_at(pay, ride_id) + timedelta(seconds=timeout), emitted)

    # Then the system cancelled the ride, saying why, and the driver is free again
    ride = await pay.market.read(customer, ride_id)
    last = ride["history"][-1]
    assert (ride["status"], last["from"], last["by"], last["reason"]) == (
        "CANCELLED", "BID_ACCEPTED", SYSTEM, "payment was not authorized in time")
    assert await pay.market.active_ride_of(driver) is None
    # And both users' rooms and the ride's got `ride:status` (and the region's live map `map:ride`)
    assert [(e, p["status"], rooms_of(r)) for e, p, r in emitted] == [
        ("ride:status", "CANCELLED", {f"ride:{ride_id}", f"user:{customer.id}", f"user:{driver.id}"}),
        ("map:ride", "CANCELLED", {"map:BER"})]
    # And the customer and the driver are told
    assert "payment_expired" in templates(pay.market, customer)
    assert "ride_cancelled" in templates(pay.market, driver)
    # And the hold is released at Stripe by `payments.cancel`
    assert pay.run_queued("payments.cancel") == 1
    assert pay.payment(ride_id).status == "released"
    assert pay.fake.payment_intents[intent_id]["status"] == "canceled"
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 0
    # And a second delivery changes nothing
    assert not expire_hold(pay, ride_id, accepted_at(pay, ride_id) + timedelta(seconds=timeout + 60), emitted)
    assert pay.queued("payments.cancel") == 0 and len(emitted) == 2


async def test_an_authorized_hold_keeps_the_ride_and_the_driver_sets_off(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, _ = await pay.held(customer, driver)

    late = accepted_at(pay, ride_id) + timedelta(seconds=pay.settings.stripe.hold_timeout_s + 60)
    assert not expire_hold(pay, ride_id, late, Emitted())

    assert (await pay.market.read(customer, ride_id))["status"] == "BID_ACCEPTED"
    assert (await pay.market.move(driver, ride_id, "DRIVER_ARRIVING")).status_code == 200
    assert not expire_hold(pay, ride_id, late, Emitted())  # and a ride under way is never touched
    assert pay.payment(ride_id).status == "authorized"


async def test_a_cash_ride_has_no_hold_timeout(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.market.driver()
    ride_id = await pay.accepted(customer, driver, card=False)

    assert delayed_jobs(pay.market, "rides.expire_hold") == []
    late = accepted_at(pay, ride_id) + timedelta(seconds=pay.settings.stripe.hold_timeout_s + 60)
    assert not expire_hold(pay, ride_id, late, Emitted())
    assert (await pay.market.read(customer, ride_id))["status"] == "BID_ACCEPTED"


async def test_an_unconfirmed_hold_expires_through_a_real_worker(
    make_client: AppFactory, paid_settings: Settings, stripe_fake: FakeStripe, start_worker: WorkerFactory
) -> None:
    # Given a farm (web and worker) whose hold timeout is one second, and a payable driver
    quick = dataclasses.replace(paid_settings,
                                stripe=dataclasses.replace(paid_settings.stripe, hold_timeout_s=1))
    pay = PayBench(await make_client(quick), quick, stripe_fake)
    await pay.market.region()
    customer, driver = await pay.market.customer(), await pay.payable_driver()
    resources = get_resources()
    saved, resources.settings = resources.settings, quick
    resources._stripe = StripeGateway(quick.stripe)
    try:
        start_worker(relay=quick, threads=4)

        # When a card ride is accepted and the customer never confirms the card
        ride_id = await pay.accepted(customer, driver)

        # Then about a second later the ride is cancelled and whatever was held is released
        # ("released" once the hold job had created the PaymentIntent, as it normally has by then)
        wait_for(lambda: pay.payment(ride_id).status in ("released", "cancelled"),
                 what="the hold to expire and be released")
        ride = await pay.market.read(customer, ride_id)
        assert (ride["status"], ride["history"][-1]["by"]) == ("CANCELLED", SYSTEM)
        assert await pay.market.active_ride_of(driver) is None
        assert [pi["status"] for pi in pay.fake.payment_intents.values()] in ([], ["canceled"])
    finally:
        resources.settings, resources._stripe = saved, None
        pay.close()
