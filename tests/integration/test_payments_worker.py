"""The payment actors in a real Dramatiq worker: outbox → relay → Redis → `payments.*` → Stripe fake.

The worker's Stripe client is built from the test's settings (pointed at the local fake); the
rest — broker, middleware, relay, sessions, publisher — is the worker as the Procfile runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from app.adapters.stripe_gateway import StripeGateway
from app.settings import Settings
from models import Driver, Job
from models.jobs import LIVE_STATES
from tests.integration.payments_support import PayBench, paid_settings, pay, stripe_fake
from tests.integration.workers_support import WorkerFactory, db_fixture, start_worker_fixture, wait_for
from workers.resources import get_resources

__all__ = ["db_fixture", "paid_settings", "pay", "start_worker_fixture", "stripe_fake"]  # fixtures


@pytest.fixture
def paying_worker(start_worker: WorkerFactory, paid_settings: Settings) -> Iterator[None]:
    resources = get_resources()
    resources._stripe = StripeGateway(paid_settings.stripe)
    start_worker(relay=paid_settings, threads=4)
    try:
        yield
    finally:
        resources._stripe = None


async def test_the_paid_flow_runs_through_the_real_worker(pay: PayBench, paying_worker: None) -> None:
    customer = await pay.market.customer()
    driver = await pay.market.driver()
    response = await pay.api.post("/api/v1/drivers/me/payouts/onboard", headers=driver.headers)
    assert response.status_code == 200, response.text
    account = pay.driver_account(driver) or ""
    ready = await pay.deliver(pay.fake.set_account(account, charges_enabled=True, payouts_enabled=True))
    assert ready.status_code == 200, ready.text  # payments.handle_event runs in the worker
    wait_for(lambda: pay.fake.count("GET", f"/v1/accounts/{account}") >= 1, what="the account re-read")

    def accept_possible() -> bool:
        with pay.market.db() as session:
            return bool(session.scalar(select(Driver.payouts_enabled)
                                       .where(Driver.user_id == uuid.UUID(driver.id))))

    wait_for(accept_possible, what="the driver's payouts enabled from the webhook")
    ride_id = await pay.accepted(customer, driver, amount=3000)
    intent_id = wait_for(lambda: pay.payment(ride_id).payment_intent_id,
                         what="the hold from payments.authorize")
    pay.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    await pay.deliver(pay.fake.events_of_type("payment_intent.amount_capturable_updated")[-1])
    wait_for(lambda: pay.payment(ride_id).status == "authorized", what="the authorization webhook handled")

    await pay.market.walk(driver, ride_id, "COMPLETED")
    wait_for(lambda: pay.payment(ride_id).status == "captured", what="payments.capture")
    assert pay.ledger(ride_id) == {"driver_earning": 2550, "platform_commission": 450}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 3000
    assert pay.fake.count("POST", f"/v1/payment_intents/{intent_id}/capture") == 1

    def outbox_empty() -> bool:
        with pay.market.db() as session:
            due = select(Job.id).where(Job.state.in_(LIVE_STATES), Job.due_at <= func.now())
            return not session.scalars(due).all()  # (the hold's timeout, due later, still waits)

    wait_for(outbox_empty, what="every job done")


async def onboarded(pay: PayBench) -> Any:
    """A driver whose Connect account is ready, learnt through the worker (webhook → handle_event)."""
    driver = await pay.market.driver()
    response = await pay.api.post("/api/v1/drivers/me/payouts/onboard", headers=driver.headers)
    assert response.status_code == 200, response.text
    account = pay.driver_account(driver) or ""
    ready = await pay.deliver(pay.fake.set_account(account, charges_enabled=True, payouts_enabled=True))
    assert ready.status_code == 200, ready.text

    def payouts_enabled() -> bool:
        with pay.market.db() as session:
            return bool(session.scalar(select(Driver.payouts_enabled)
                                       .where(Driver.user_id == uuid.UUID(driver.id))))

    wait_for(payouts_enabled, what="the driver's payouts enabled from the webhook")
    return driver


async def test_stripe_answering_500_pauses_payment_jobs_and_never_holds_dispatch_up(
    pay: PayBench, paying_worker: None, paid_settings: Settings,
) -> None:
    import dataclasses

    from models import Offer, Payment, Ride

    # (the worker's Stripe circuit opens after 2 failures in a row, for 3 s, doubling after a failed trial)
    get_resources()._stripe = StripeGateway(dataclasses.replace(paid_settings.stripe, circuit_failures=2,
                                                                circuit_pause_s=3.0))

    # Given three accepted card rides whose holds Stripe refuses with 500 for now
    customer = await pay.market.customer()
    drivers = [await onboarded(pay) for _ in range(3)]
    pay.fake.fail_next(100_000, 500, path_prefix="/v1/payment_intents")
    card_rides = [await pay.accepted(customer, driver) for driver in drivers]
    # And a driver nearby, online, and 50 cash rides requested meanwhile
    near = await pay.market.driver()
    located = await pay.api.put("/api/v1/drivers/me/location", headers=near.headers,
                                json={"lat": 52.5201, "lng": 13.4051})
    assert located.status_code == 204, located.text
    cash = [(await pay.market.ride(customer))["id"] for _ in range(50)]

    # Then every cash ride is offered to the nearby driver, each offer made long before it expires
    def offered() -> list[tuple[Any, Any, Any]]:
        with pay.market.db() as session:
            query = (select(Ride.created_at, Offer.created_at, Offer.expires_at)
                     .join(Offer, Offer.ride_id == Ride.id)
                     .where(Ride.id.in_([uuid.UUID(r) for r in cash]), Offer.driver_id == uuid.UUID(near.id)))
            return list(session.execute(query).all())

    rows = wait_for(lambda: len(offered()) == 50 and offered(), what="the 50 offers", timeout=60)
    assert all(made < expires for _, made, expires in rows)
    slowest = max((made - requested).total_seconds() for requested, made, _ in rows)
    print(f"\nslowest ride → offer while Stripe answered 500: {slowest:.2f} s")
    # And the holds were not tried once per retry: after two failures the circuit paused them (each
    # job waits in the ledger without spending its retries), a trial call going through only at the
    # end of each pause (3, 6, 12, 24, 48 s: at most five in 90 s)
    with pay.fake.lock:
        tries = sum(1 for c in pay.fake.calls if c.method == "POST" and c.path == "/v1/payment_intents")
    assert 2 <= tries <= 2 + 5, f"{tries} tries for 3 holds"

    # When Stripe is back
    pay.fake.recover()
    # Then each ride gets exactly one hold
    def holds() -> list[str | None]:
        with pay.market.db() as session:
            return list(session.scalars(select(Payment.payment_intent_id)
                                        .where(Payment.ride_id.in_([uuid.UUID(r) for r in card_rides]))))

    intents = wait_for(lambda: all(holds()) and holds(), what="the three holds", timeout=90)
    assert len(set(intents)) == 3
    with pay.fake.lock:
        mine = [pi for pi in pay.fake.payment_intents.values()
                if pi.get("metadata", {}).get("ride_id") in card_rides]
    assert len(mine) == 3
