"""Payment test bench: the app configured for Stripe against the local fake, and the payment jobs.

The app under test and the jobs talk to `tests/fakes/stripe_server.FakeStripe` through the real
stripe SDK; webhooks are signed with Stripe's real scheme. Jobs run through the real service
functions in a real unit of work on the run's PostgreSQL (as `jobs/payments.py` runs them), so a
test can also roll a run back after Stripe answered — what a worker killed before its commit does.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import stripe
from sqlalchemy import select

from app.adapters.stripe_gateway import StripeGateway
from app.db import UnitOfWork
from app.services import payments
from app.settings import Settings
from models import Driver, Job, LedgerEntry, Payment, StripeEvent
from tests.fakes.stripe_server import FakeStripe, signed_webhook
from tests.integration.conftest import Accounts, AppFactory, Client
from tests.integration.market_support import CURRENCY, Market, Person

WEBHOOK_SECRET = "whsec_test_dispatchfarm"
#: The contract's path; `/webhooks/stripe` at the root is its alias.
STRIPE_WEBHOOK = "/api/v1/webhooks/stripe"


@pytest.fixture
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def paid_settings(settings: Settings, stripe_fake: FakeStripe) -> Settings:
    stripe_settings = dataclasses.replace(settings.stripe, secret_key=stripe_fake.api_key,
                                          webhook_secret=WEBHOOK_SECRET, api_base=stripe_fake.base_url,
                                          max_network_retries=0)
    return dataclasses.replace(settings, stripe=stripe_settings)


class PayBench:
    """The market on a Stripe-enabled app, the payment jobs, and what the database holds."""

    def __init__(self, api: Client, settings: Settings, fake: FakeStripe) -> None:
        self.api = api
        self.settings = settings
        self.fake = fake
        self.market = Market(api, Accounts(api), settings)
        self.gateway = StripeGateway(settings.stripe)
        self.emitted: list[tuple[str, dict[str, Any], Any]] = []
        self.sdk = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.base_url})

    def close(self) -> None:
        self.market.close()

    # --- jobs ------------------------------------------------------------------------------------
    def run(self, job: Callable[..., Any], *args: Any, commit: bool = True) -> Any:
        """Run a payment job's service function in its own unit of work (rolled back if not `commit`)."""
        uow = UnitOfWork(self.market.db())
        env = payments.JobEnv(settings=self.settings, gateway=lambda: self.gateway,
                              after_commit=uow.after_commit,
                              emit=lambda event, payload, room: self.emitted.append((event, payload, room)))
        try:
            result = job(uow.session, env, *args)
            if commit:
                uow.commit()
            else:
                uow.rollback()
            return result
        finally:
            uow.close()

    def queued(self, actor: str, *args: Any) -> int:
        """Outbox rows for this job (what the relay would enqueue)."""
        with self.market.db() as session:
            rows = session.scalars(select(Job).where(Job.actor == actor)).all()
        return sum(1 for row in rows if not args or list(row.args) == [str(a) for a in args])

    def run_queued(self, actor: str) -> int:
        """Run every outbox job of `actor` (as the worker would after the relay), once each."""
        with self.market.db.begin() as session:
            rows = session.scalars(select(Job).where(Job.actor == actor)
                                   .order_by(Job.id)).all()
            todo = [(row.id, list(row.args)) for row in rows]
            for row in rows:
                session.delete(row)
        functions = {"payments.authorize": payments.authorize, "payments.capture": payments.capture,
                     "payments.cancel": payments.cancel, "payments.refund": payments.refund,
                     "payments.handle_event": payments.handle_event}
        for _, args in todo:
            converted = [uuid.UUID(args[0]) if actor != "payments.handle_event" else args[0], *args[1:]]
            self.run(functions[actor], *converted)
        return len(todo)

    # --- webhooks --------------------------------------------------------------------------------
    async def deliver(self, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET,
                      timestamp: int | None = None, path: str = STRIPE_WEBHOOK) -> Any:
        body, headers = signed_webhook(event, secret, timestamp)
        return await self.api.post(path, content=body, headers=headers)

    async def deliver_and_handle(self, event: dict[str, Any]) -> None:
        response = await self.deliver(event)
        assert response.status_code == 200, response.text
        self.run_queued("payments.handle_event")

    # --- people ----------------------------------------------------------------------------------
    async def payable_driver(self) -> Person:
        """A driver onboarded to Connect: link from the API, Stripe's `account.updated` webhook."""
        driver = await self.market.driver()
        response = await self.api.post("/api/v1/drivers/me/payouts/onboard", headers=driver.headers)
        assert response.status_code == 200, response.text
        account = self.driver_account(driver)
        assert account is not None
        event = self.fake.set_account(account, charges_enabled=True, payouts_enabled=True,
                                      details_submitted=True)
        await self.deliver_and_handle(event)
        return driver

    def driver_account(self, driver: Person) -> str | None:
        with self.market.db() as session:
            return session.scalar(
                select(Driver.stripe_account_id).where(Driver.user_id == uuid.UUID(driver.id)))

    async def card_ride(self, customer: Person) -> dict[str, Any]:
        body = {"pickup": {"lat": 52.52, "lng": 13.405}, "dropoff": {"lat": 52.50, "lng": 13.42},
                "vehicleType": "van", "region": "BER", "paymentMethod": "card"}
        response = await self.api.post("/api/v1/rides", json=body, headers=customer.headers)
        assert response.status_code == 201, response.text
        ride: dict[str, Any] = response.json()
        return ride

    async def accepted(self, customer: Person, driver: Person, *, amount: int = 2500,
                       card: bool = True, currency: str = CURRENCY) -> str:
        ride = await (self.card_ride(customer) if card else self.market.ride(customer))
        bid = await self.market.offered_bid(driver, ride["id"], amount=amount, currency=currency)
        response = await self.market.accept(customer, ride["id"], bid["id"])
        assert response.status_code == 200, response.text
        return str(ride["id"])

    async def held(self, customer: Person, driver: Person, *, amount: int = 2500,
                   currency: str = CURRENCY) -> tuple[str, str]:
        """A card ride accepted, its hold created and confirmed by the customer's card (authorized)."""
        ride_id = await self.accepted(customer, driver, amount=amount, currency=currency)
        self.run_queued("payments.authorize")
        response = await self.api.post(f"/api/v1/payments/{ride_id}/intent", headers=customer.headers)
        assert response.status_code == 200, response.text
        intent_id = self.payment(ride_id).payment_intent_id
        assert intent_id is not None
        self.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
        held = self.fake.events_of_type("payment_intent.amount_capturable_updated")[-1]
        await self.deliver_and_handle(held)
        assert self.payment(ride_id).status == "authorized"
        return ride_id, intent_id

    # --- what the database holds -----------------------------------------------------------------
    def payment(self, ride_id: str) -> Payment:
        with self.market.db() as session:
            payment = session.scalar(select(Payment).where(Payment.ride_id == uuid.UUID(ride_id)))
        assert payment is not None, f"no payment for ride {ride_id}"
        return payment

    def ledger(self, ride_id: str) -> dict[str, int]:
        with self.market.db() as session:
            rows = session.execute(select(LedgerEntry.kind, LedgerEntry.amount)
                                   .where(LedgerEntry.ride_id == uuid.UUID(ride_id))).all()
        totals: dict[str, int] = {}
        for kind, amount in rows:
            totals[kind] = totals.get(kind, 0) + amount
        return totals

    def balance(self, ride_id: str) -> int:
        with self.market.db() as session:
            return payments.ledger_balance(session, uuid.UUID(ride_id))

    def stored_events(self) -> int:
        with self.market.db() as session:
            return len(session.scalars(select(StripeEvent.id)).all())

    def stripe_net(self, intent_id: str) -> int:
        """What Stripe (the fake) says the customer paid: captured minus refunded."""
        pi = self.fake.payment_intents[intent_id]
        charge = self.fake.charges.get(pi.get("latest_charge") or "", {})
        captured = int(charge.get("amount_captured", 0)) if charge.get("captured") else 0
        if not captured:
            return 0
        released = int(charge["amount"]) - captured  # never captured, counted as refunded by Stripe
        return captured - (int(charge.get("amount_refunded", 0)) - released)


@pytest.fixture
async def pay(make_client: AppFactory, paid_settings: Settings,
              stripe_fake: FakeStripe) -> AsyncIterator[PayBench]:
    api = await make_client(paid_settings)
    bench = PayBench(api, paid_settings, stripe_fake)
    await bench.market.region()
    try:
        yield bench
    finally:
        bench.close()

