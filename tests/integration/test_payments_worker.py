"""The payment actors in a real Dramatiq worker: outbox → relay → Redis → `payments.*` → Stripe fake.

The worker's Stripe client is built from the test's settings (pointed at the local fake); the
rest — broker, middleware, relay, sessions, publisher — is the worker as the Procfile runs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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
