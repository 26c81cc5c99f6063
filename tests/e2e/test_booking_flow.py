"""A card booking on the real farm (the Procfile's processes), watched through real Socket.IO clients:
the customer holds a provider's slot, pays with the hold's clientSecret (Stripe, here the local fake
through the real SDK), Stripe's signed webhook reaches the web, a worker confirms the booking, and
both parties' sockets get `booking:status` CONFIRMED once each; a calendar viewer sees the slot go."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import stripe
from sqlalchemy import create_engine, select

from app.settings import Settings
from models import Driver
from tests.e2e.conftest import ensure_region, running_farm
from tests.e2e.farm import Farm
from tests.e2e.test_ride_flow import Watcher, auth, register
from tests.fakes.stripe_server import FakeStripe, signed_webhook

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET = "whsec_e2e_bookings"
DEADLINE_S = 30.0


class BookingWatcher(Watcher):
    EVENTS = ("booking:status", "slots:changed")


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def farm(
    database: str, redis_prefix_cleanup: None, settings: Settings, stripe_fake: FakeStripe
) -> Iterator[Farm]:
    ensure_region(settings, "E2B")
    yield from running_farm(
        {
            "STRIPE_SECRET_KEY": stripe_fake.api_key,
            "STRIPE_API_BASE": stripe_fake.base_url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
        }
    )


@pytest.fixture
async def http(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as client:
        yield client


async def until(check: Any, what: str) -> Any:
    """Poll `check()` (sync or async) until it is truthy, up to the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.1)
    raise AssertionError(what)


async def deliver(http: httpx.AsyncClient, event: dict[str, Any]) -> None:
    body, headers = signed_webhook(event, WEBHOOK_SECRET)
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def payable_provider(http: httpx.AsyncClient, fake: FakeStripe, settings: Settings) -> dict[str, Any]:
    """A driver onboarded to Stripe Connect, with a published week (every day 00:00-23:59 in Berlin)."""
    provider = await register(http, "driver", vehicleType="van")
    assert (await http.post("/drivers/me/payouts/onboard", headers=auth(provider))).status_code == 200
    engine = create_engine(settings.db.url)
    try:

        def account() -> str | None:
            with engine.connect() as conn:
                return conn.scalar(
                    select(Driver.stripe_account_id).where(
                        Driver.user_id == uuid.UUID(provider["user"]["id"])
                    )
                )

        account_id = await until(account, "the Connect account recorded")
        await deliver(
            http,
            fake.set_account(account_id, charges_enabled=True, payouts_enabled=True, details_submitted=True),
        )

        def enabled() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.scalar(
                        select(Driver.charges_enabled).where(
                            Driver.user_id == uuid.UUID(provider["user"]["id"])
                        )
                    )
                )

        await until(enabled, "account.updated handled by a worker")
    finally:
        engine.dispose()
    week = [{"weekday": day, "start": "00:00", "end": "23:59"} for day in range(7)]
    published = await http.put(
        "/providers/me/schedule",
        headers=auth(provider),
        json={
            "region": "E2B",
            "timeZone": "Europe/Berlin",
            "price": {"amount": 5000, "currency": "EUR"},
            "slotMinutes": 30,
            "weeklyHours": week,
        },
    )
    assert published.status_code == 200, published.text
    return provider


async def test_hold_pay_confirm_seen_once_on_both_sockets(
    farm: Farm, http: httpx.AsyncClient, stripe_fake: FakeStripe, settings: Settings
) -> None:
    provider = await payable_provider(http, stripe_fake, settings)
    customer = await register(http, "customer")
    customer_socket, provider_socket, viewer = BookingWatcher(), BookingWatcher(), BookingWatcher()
    await customer_socket.connect(farm.base_url, customer["accessToken"])
    await provider_socket.connect(farm.base_url, provider["accessToken"])
    await viewer.connect(farm.base_url, (await register(http, "customer"))["accessToken"])
    provider_id = provider["user"]["id"]
    ack = await viewer.client.call("subscribe:calendar", {"providerId": provider_id}, timeout=10)
    assert ack == {"ok": True}
    try:
        # Given a free slot two days ahead on the provider's calendar
        day = datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=2)
        start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(
            UTC
        )
        slots = await http.get(
            f"/providers/{provider_id}/slots",
            params={"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()},
        )
        assert next(s["start"] for s in slots.json()["items"]) == start.isoformat().replace("+00:00", "Z")

        # When the customer holds it with a card, and pays with the hold's clientSecret
        held = await http.post(
            "/bookings",
            headers=auth(customer),
            json={
                "providerId": provider_id,
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                "paymentMethod": "card",
            },
        )
        assert held.status_code == 201, held.text
        booking_id = held.json()["id"]
        taken = await viewer.wait_for("slots:changed", providerId=provider_id, free=False)
        assert taken["start"] == held.json()["start"]
        intent = await http.post(f"/bookings/{booking_id}/intent", headers=auth(customer))
        assert intent.status_code == 200, intent.text
        sdk = stripe.StripeClient(stripe_fake.api_key, base_addresses={"api": stripe_fake.base_url})
        secret = intent.json()["clientSecret"]
        sdk.v1.payment_intents.confirm(secret.split("_secret_")[0], {"payment_method": "pm_card_visa"})
        await deliver(http, stripe_fake.events_of_type("payment_intent.amount_capturable_updated")[-1])

        # Then a worker confirms it, and both parties' sockets are told once
        for socket in (customer_socket, provider_socket):
            confirmed = await socket.wait_for("booking:status", bookingId=booking_id, status="CONFIRMED")
            assert confirmed["by"] == {"id": None, "role": "system"}
        seen = await http.get(f"/bookings/{booking_id}", headers=auth(customer))
        assert seen.json()["status"] == "CONFIRMED" and seen.json()["payment"]["status"] == "authorized"

        # (a later move is the fence: anything sent twice would have arrived before it)
        cancel = await http.post(f"/bookings/{booking_id}/cancel", headers=auth(provider))
        assert cancel.status_code == 200, cancel.text
        for socket in (customer_socket, provider_socket):
            await socket.wait_for("booking:status", bookingId=booking_id, status="CANCELLED")
            statuses = [
                p["status"] for n, p in socket.named("booking:status") if p["bookingId"] == booking_id
            ]
            assert statuses == ["HELD", "CONFIRMED", "CANCELLED"]
        await viewer.wait_for("slots:changed", providerId=provider_id, free=True)
        assert len(stripe_fake.payment_intents) >= 1
        await until(
            lambda: stripe_fake.payment_intents[secret.split("_secret_")[0]]["status"] == "canceled",
            "the card hold released by bookings.settle",
        )
    finally:
        for socket in (customer_socket, provider_socket, viewer):
            await socket.client.disconnect()
