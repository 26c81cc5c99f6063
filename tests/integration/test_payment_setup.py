"""The web's Stripe calls hold no database connection or lock while Stripe answers
(`app.services.payment_setup`): a slow Stripe can't exhaust a web process's pool, concurrent callers
converge on one PaymentIntent / one Connect account, and a lock wait answers 503, never hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select

from app.settings import Settings
from models import Payment
from tests.fakes.stripe_server import FakeStripe
from tests.integration.conftest import AppFactory
from tests.integration.market_support import Call, assert_error, at_once
from tests.integration.payments_support import PayBench
from tests.integration.payments_support import paid_settings as paid_settings  # a fixture
from tests.integration.payments_support import stripe_fake as stripe_fake  # a fixture

#: A web process with a small pool: before the fix, as many slow Stripe calls as connections
#: stalled every other request of the process.
POOL = 3
ONBOARDS = 20
HELD_S = 30.0


async def _nothing() -> None:
    return None


async def while_stripe_waits(bench: PayBench, prefix: str, calls: list[Call],
                             during: Callable[[], Awaitable[None]] = _nothing) -> list[httpx.Response]:
    """Send `calls` at once while Stripe parks requests to `prefix`; once all of them wait there, run
    `during`, then let Stripe answer. Returns their responses."""
    bench.fake.hold(prefix)

    async def watch() -> None:
        try:
            reached = await asyncio.to_thread(bench.fake.wait_held, len(calls), HELD_S)
            assert reached, f"only {bench.fake.held} of {len(calls)} reached Stripe: the others wait " \
                            "for a database connection or a lock"
            await during()
        finally:
            bench.fake.release()

    answers, _ = await asyncio.gather(at_once(calls), watch())
    return answers


@pytest.fixture
async def bench(make_client: AppFactory, paid_settings: Settings,
                stripe_fake: FakeStripe) -> AsyncIterator[PayBench]:
    db = dataclasses.replace(paid_settings.db, pool_size=POOL, max_overflow=0, lock_timeout_ms=300)
    settings = dataclasses.replace(paid_settings, db=db)
    bench = PayBench(await make_client(settings), settings, stripe_fake)
    await bench.market.region()
    try:
        yield bench
    finally:
        stripe_fake.release()
        bench.close()


async def test_twenty_onboardings_waiting_on_stripe_leave_the_pool_free(bench: PayBench) -> None:
    # Given 20 drivers asking for their onboarding link at once, and Stripe slow to create accounts
    drivers = [await bench.market.driver(online=False) for _ in range(ONBOARDS)]
    calls = [Call(bench.api, "POST", "/api/v1/drivers/me/payouts/onboard", d.headers) for d in drivers]

    async def meanwhile() -> None:
        # When every one of them waits on Stripe (more than the pool has connections), then the
        # process still answers, requests that need the database too
        assert (await bench.api.get("/health")).status_code == 200
        me = await bench.api.get("/api/v1/me", headers=drivers[0].headers)
        assert me.status_code == 200, me.text
        earnings = await bench.api.get("/api/v1/drivers/me/earnings", headers=drivers[0].headers)
        assert earnings.status_code == 200, earnings.text

    answers = await while_stripe_waits(bench, "/v1/accounts", calls, meanwhile)
    # And once Stripe answers, every driver gets its link and exactly one account
    assert [a.status_code for a in answers] == [200] * ONBOARDS, [a.text for a in answers]
    accounts = {bench.driver_account(d) for d in drivers}
    assert None not in accounts and len(accounts) == ONBOARDS == len(bench.fake.accounts)


async def test_one_driver_onboarding_twice_at_once_gets_one_account(bench: PayBench) -> None:
    driver = await bench.market.driver(online=False)
    calls = [Call(bench.api, "POST", "/api/v1/drivers/me/payouts/onboard", driver.headers) for _ in range(4)]
    answers = await while_stripe_waits(bench, "/v1/accounts", calls)
    assert [a.status_code for a in answers] == [200] * 4
    assert len(bench.fake.accounts) == 1
    assert bench.driver_account(driver) == next(iter(bench.fake.accounts))


async def test_concurrent_intent_calls_create_one_payment_intent(bench: PayBench) -> None:
    # Given a card ride just accepted (the hold job has not run) and Stripe slow to create intents
    customer, driver = await bench.market.customer(), await bench.payable_driver()
    ride_id = await bench.accepted(customer, driver)
    url = f"/api/v1/payments/{ride_id}/intent"

    async def meanwhile() -> None:
        # When eight calls wait on Stripe at once (none holds the ride's or the payment's lock)
        ride = await bench.api.get(f"/api/v1/rides/{ride_id}", headers=customer.headers)
        assert ride.status_code == 200, ride.text

    answers = await while_stripe_waits(bench, "/v1/payment_intents",
                                       [Call(bench.api, "POST", url, customer.headers)] * 8, meanwhile)
    # Then they all get the same client secret, of the one PaymentIntent recorded
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert len({a.json()["clientSecret"] for a in answers}) == 1
    assert bench.fake.count("POST", "/v1/payment_intents") == 1 and len(bench.fake.payment_intents) == 1
    intent = next(iter(bench.fake.payment_intents.values()))
    assert answers[0].json()["clientSecret"] == intent["client_secret"]
    assert bench.payment(ride_id).payment_intent_id == intent["id"]
    # And the hold job, running late, finds it done and creates nothing
    bench.run_queued("payments.authorize")
    assert len(bench.fake.payment_intents) == 1


async def test_a_payment_row_locked_too_long_answers_503_not_a_hang(bench: PayBench) -> None:
    # Given a card ride whose payment row another transaction keeps locked (a slow job, say)
    customer, driver = await bench.market.customer(), await bench.payable_driver()
    ride_id = await bench.accepted(customer, driver)
    url = f"/api/v1/payments/{ride_id}/intent"
    with bench.market.db.begin() as session:
        session.scalar(select(Payment.id).where(Payment.ride_id == uuid.UUID(ride_id)).with_for_update())
        # When the customer asks for its client secret meanwhile
        response = await bench.api.post(url, headers=customer.headers)
        # Then it is told to come back (after DB_LOCK_TIMEOUT_MS), nothing half-done
        details = assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert details["reason"] == "LOCK_TIMEOUT" and response.headers["Retry-After"] == "1"
        assert bench.payment(ride_id).client_secret is None
    # And once the lock is gone, the same call gets the one PaymentIntent Stripe made
    again = await bench.api.post(url, headers=customer.headers)
    assert again.status_code == 200, again.text
    assert len(bench.fake.payment_intents) == 1


async def test_an_intent_for_a_ride_cancelled_meanwhile_is_released(bench: PayBench) -> None:
    # Given a card ride whose intent call waits on Stripe
    customer, driver = await bench.market.customer(), await bench.payable_driver()
    ride_id = await bench.accepted(customer, driver)

    async def meanwhile() -> None:
        # When the customer cancels the ride meanwhile and the release job runs
        assert (await bench.market.cancel(customer, ride_id)).status_code == 200
        bench.run_queued("payments.cancel")

    [answer] = await while_stripe_waits(bench, "/v1/payment_intents", [
        Call(bench.api, "POST", f"/api/v1/payments/{ride_id}/intent", customer.headers)], meanwhile)
    # Then the intent call is refused and the intent it made is cancelled at Stripe, not left open
    assert assert_error(answer, 409, "CONFLICT")["reason"] == "PAYMENT_CLOSED"
    [intent] = bench.fake.payment_intents.values()
    assert intent["status"] == "canceled"
    assert bench.payment(ride_id).status == "cancelled"
