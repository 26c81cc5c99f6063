"""Booking test bench: a provider with a published week, customers, holds over HTTP, and the booking
jobs run through their real service functions in a real unit of work (as `jobs/bookings.py` runs
them), on top of the payment bench (the Stripe fake through the real SDK, signed webhooks)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from app.db import UnitOfWork
from app.services import payments
from app.services.bookings import lifecycle, money, reminders
from app.services.bookings.effects import Effects
from app.settings import Settings
from models import Booking, Job, NotificationRequest, Payment
from tests.fakes.stripe_server import FakeStripe
from tests.integration.conftest import AppFactory
from tests.integration.market_support import Person
from tests.integration.payments_support import PayBench

BERLIN = ZoneInfo("Europe/Berlin")
#: Every day 08:00-20:00 in Berlin, one-hour slots.
WEEK = [{"weekday": day, "start": "08:00", "end": "20:00"} for day in range(7)]


def schedule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"region": "BER", "timeZone": "Europe/Berlin",
                            "price": {"amount": 4000, "currency": "EUR"}, "slotMinutes": 60,
                            "bufferMinutes": 0, "weeklyHours": WEEK}
    body.update(overrides)
    return body


def at_local(days_ahead: int, hour: int, minute: int = 0) -> datetime:
    """`hour:minute` Berlin time, `days_ahead` days from today (UTC instant)."""
    day = datetime.now(BERLIN).date() + timedelta(days=days_ahead)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class BookingBench(PayBench):
    """The payment bench, plus a provider's calendar and the booking jobs."""

    async def provider(self, *, card: bool = True, **schedule: Any) -> Person:
        driver = await (self.payable_driver() if card else self.market.driver())
        response = await self.api.put("/api/v1/providers/me/schedule", json=schedule_body(**schedule),
                                      headers=driver.headers)
        assert response.status_code == 200, response.text
        return driver

    def body(self, provider: Person, start: datetime, hours: float = 1, method: str = "card",
             **extra: Any) -> dict[str, Any]:
        end = start + timedelta(hours=hours)
        return {"providerId": provider.id, "start": iso(start), "end": iso(end), "paymentMethod": method,
                **extra}

    async def hold(self, customer: Person, provider: Person, start: datetime, hours: float = 1,
                   method: str = "card", expect: int = 201) -> dict[str, Any]:
        response = await self.api.post("/api/v1/bookings", json=self.body(provider, start, hours, method),
                                       headers=customer.headers)
        assert response.status_code == expect, response.text
        result: dict[str, Any] = response.json()
        return result

    async def booking(self, who: Person, booking_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/bookings/{booking_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def slots(self, provider: Person, start: datetime, end: datetime) -> list[str]:
        response = await self.api.get(f"/api/v1/providers/{provider.id}/slots",
                                      params={"from": iso(start), "to": iso(end)})
        assert response.status_code == 200, response.text
        return [slot["start"] for slot in response.json()["items"]]

    async def market_pause(self) -> None:
        """Let a moment pass while waiting on a deadline the test reads from the booking."""
        await asyncio.sleep(0.05)

    # --- the booking jobs ----------------------------------------------------------------------
    def _unit(self, work: Any) -> Any:
        uow = UnitOfWork(self.market.db())
        env = payments.JobEnv(settings=self.settings, gateway=lambda: self.gateway,
                              after_commit=uow.after_commit,
                              emit=lambda event, payload, room: self.emitted.append((event, payload, room)))
        effects = Effects()
        try:
            result = work(uow.session, env, effects)
            effects.emit_after_commit(uow.after_commit, env.emit)
            uow.commit()
            return result
        finally:
            uow.close()

    def settle(self, booking_id: str) -> str:
        return str(self._unit(lambda s, env, fx: money.settle(s, env, uuid.UUID(booking_id),
                                                               now=datetime.now(UTC), effects=fx)))

    def expire(self, booking_id: str) -> bool:
        return bool(self._unit(lambda s, env, fx: lifecycle.expire(s, self.settings, uuid.UUID(booking_id),
                                                                    now=datetime.now(UTC), effects=fx)))

    def remind(self, booking_id: str, offset_s: int, now: datetime | None = None) -> bool:
        moment = now or datetime.now(UTC)
        return bool(self._unit(lambda s, env, fx: reminders.remind(s, self.settings, uuid.UUID(booking_id),
                                                                    offset_s, now=moment)))

    def jobs(self, actor: str, booking_id: str | None = None) -> list[Job]:
        with self.market.db() as session:
            rows = session.scalars(select(Job).where(Job.actor == actor).order_by(Job.id)).all()
        return [row for row in rows if booking_id is None or row.args[0] == booking_id]

    def run_settles(self) -> int:
        """Run every waiting `bookings.settle` (as the worker would), once each."""
        with self.market.db.begin() as session:
            rows = session.scalars(select(Job).where(Job.actor == "bookings.settle", Job.state == "waiting")
                                   .order_by(Job.id)).all()
            todo = [str(row.args[0]) for row in rows]
            for row in rows:
                row.state = "done"
        for booking_id in todo:
            self.settle(booking_id)
        return len(todo)

    def row(self, booking_id: str) -> Booking:
        with self.market.db() as session:
            booking = session.get(Booking, uuid.UUID(booking_id))
        assert booking is not None
        return booking

    def booking_payment(self, booking_id: str) -> Payment:
        with self.market.db() as session:
            payment = session.scalar(select(Payment).where(Payment.booking_id == uuid.UUID(booking_id)))
        assert payment is not None
        return payment

    def notes(self, template: str) -> list[NotificationRequest]:
        with self.market.db() as session:
            query = select(NotificationRequest).where(NotificationRequest.template == template)
            return list(session.scalars(query))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload, _ in self.emitted if event == name]

    async def authorize(self, customer: Person, booking_id: str) -> str:
        """The customer confirms the card with the hold's clientSecret (Stripe.js); the intent id."""
        response = await self.api.post(f"/api/v1/bookings/{booking_id}/intent", headers=customer.headers)
        assert response.status_code == 200, response.text
        intent_id = self.booking_payment(booking_id).payment_intent_id
        assert intent_id is not None
        self.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
        return intent_id


@pytest.fixture
async def bookings(make_client: AppFactory, paid_settings: Settings,
                   stripe_fake: FakeStripe) -> AsyncIterator[BookingBench]:
    api = await make_client(paid_settings)
    bench = BookingBench(api, paid_settings, stripe_fake)
    await bench.market.region()
    try:
        yield bench
    finally:
        bench.close()


def with_bookings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, bookings=dataclasses.replace(settings.bookings, **changes))
