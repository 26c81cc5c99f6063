"""A card booking's money, through the real stripe SDK against the local fake: the hold is a
manual-capture destination charge, the booking is CONFIRMED only once Stripe says the card is
authorized (by the webhook, by the job re-reading Stripe, or both racing: once), an unpaid hold is
released at its expiry, and the end of a booking captures, releases or takes its fee by policy."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from app.services.bookings.lifecycle import HoldNotDue
from tests.fakes.stripe_server import FakeStripe
from tests.integration.bookings_support import BookingBench, at_local, bookings, with_bookings
from tests.integration.conftest import AppFactory
from tests.integration.market_support import Person, assert_error
from tests.integration.payments_support import paid_settings, stripe_fake

__all__ = ["bookings", "paid_settings", "stripe_fake"]


async def _held(bench: BookingBench, *, days: int = 3,
                hour: int = 10) -> tuple[Person, Person, dict[str, Any]]:
    provider = await bench.provider()
    customer = await bench.market.customer()
    booking = await bench.hold(customer, provider, at_local(days, hour))
    return provider, customer, booking


async def _confirmed(bench: BookingBench, **when: int) -> tuple[Person, Person, dict[str, Any]]:
    provider, customer, booking = await _held(bench, **when)
    bench.run_settles()
    await bench.authorize(customer, booking["id"])
    await bench.deliver_and_handle(bench.fake.events_of_type("payment_intent.amount_capturable_updated")[-1])
    bench.run_settles()
    assert (await bench.booking(customer, booking["id"]))["status"] == "CONFIRMED"
    return provider, customer, booking


def _started(bench: BookingBench, booking_id: str) -> None:
    """The slot has begun (the clock moved on): the booking's range is now around the present."""
    with bench.market.db.begin() as session:
        session.execute(text(
            "UPDATE bookings SET starts_at = now() - interval '5 minutes',"
            " ends_at = now() + interval '55 minutes',"
            " blocked = tstzrange(now() - interval '5 minutes', now() + interval '55 minutes', '[)')"
            " WHERE id = :id"), {"id": uuid.UUID(booking_id)})


async def test_a_card_hold_is_one_manual_capture_destination_charge(bookings: BookingBench) -> None:
    provider, customer, booking = await _held(bookings)
    assert bookings.run_settles() == 1
    payment = bookings.booking_payment(booking["id"])
    assert payment.payment_intent_id is not None
    intent = bookings.fake.payment_intents[payment.payment_intent_id]
    assert intent["capture_method"] == "manual" and intent["amount"] == 4000
    assert intent["application_fee_amount"] == 600  # the region's 15 %
    assert intent["transfer_data"]["destination"] == bookings.driver_account(provider)
    assert intent["metadata"] == {"booking_id": booking["id"]}
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/intent", headers=customer.headers)
    assert response.json()["clientSecret"] == intent["client_secret"]
    assert len(bookings.fake.payment_intents) == 1
    assert (await bookings.booking(customer, booking["id"]))["status"] == "HELD"


async def test_the_webhook_confirms_a_booking_once_its_card_is_authorized(bookings: BookingBench) -> None:
    _, customer, booking = await _held(bookings)
    bookings.run_settles()
    await bookings.authorize(customer, booking["id"])
    authorized = bookings.fake.events_of_type("payment_intent.amount_capturable_updated")[-1]
    await bookings.deliver_and_handle(authorized)
    # the booking's own job decides
    assert (await bookings.booking(customer, booking["id"]))["status"] == "HELD"
    bookings.run_settles()
    seen = await bookings.booking(customer, booking["id"])
    assert seen["status"] == "CONFIRMED" and seen["payment"]["status"] == "authorized"
    assert seen["history"][-1]["by"] == {"id": None, "role": "system"}
    assert [e["status"] for e in bookings.events("booking:status")] == ["CONFIRMED"]


async def test_the_job_confirms_it_by_reading_stripe_when_no_webhook_came(bookings: BookingBench) -> None:
    _, customer, booking = await _held(bookings)
    bookings.run_settles()
    await bookings.authorize(customer, booking["id"])
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=customer.headers)
    assert response.status_code == 200 and response.json()["status"] == "HELD"
    assert bookings.run_settles() == 1
    assert (await bookings.booking(customer, booking["id"]))["status"] == "CONFIRMED"
    assert len(bookings.notes("slot_confirmed")) == 1


async def test_webhook_and_job_racing_confirm_once_with_one_payment_intent(bookings: BookingBench) -> None:
    _, customer, booking = await _held(bookings)
    bookings.run_settles()
    await bookings.authorize(customer, booking["id"])
    webhook = bookings.fake.events_of_type("payment_intent.amount_capturable_updated")[-1]
    assert (await bookings.deliver(webhook)).status_code == 200
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=customer.headers)
    assert response.status_code == 200
    bookings.run_queued("payments.handle_event")  # writes its own settle
    barrier = threading.Barrier(2)

    def race() -> None:
        barrier.wait(timeout=10)
        bookings.settle(booking["id"])

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    bookings.run_settles()
    seen = await bookings.booking(customer, booking["id"])
    assert seen["status"] == "CONFIRMED"
    assert [h["to"] for h in seen["history"]] == ["HELD", "CONFIRMED"]
    assert [e["status"] for e in bookings.events("booking:status")] == ["CONFIRMED"]
    assert len(bookings.fake.payment_intents) == 1
    assert len(bookings.notes("slot_confirmed")) == 1


async def test_an_unpaid_hold_is_released_at_its_expiry_and_its_card_hold_cancelled_once(
        make_client: AppFactory, paid_settings: Any, stripe_fake: FakeStripe) -> None:
    settings = with_bookings(paid_settings, hold_ttl_s=2)
    bench = BookingBench(await make_client(settings), settings, stripe_fake)
    await bench.market.region()
    try:
        _, customer, booking = await _held(bench)
        bench.run_settles()
        expires = datetime.fromisoformat(booking["holdExpiresAt"])
        (job,) = bench.jobs("bookings.expire_hold", booking["id"])
        assert job.due_at == expires  # a due row at the hold's deadline
        with pytest.raises(HoldNotDue):  # early (clocks apart): retried later, nothing changed
            bench.expire(booking["id"])
        assert bench.row(booking["id"]).status == "HELD"
        while datetime.now(UTC) < expires:
            await bench.market_pause()
        assert bench.expire(booking["id"])
        assert not bench.expire(booking["id"])  # delivered twice: acts once
        assert bench.run_settles() == 1
        bench.settle(booking["id"])  # and a redelivered settle
        intent_id = bench.booking_payment(booking["id"]).payment_intent_id
        assert stripe_fake.payment_intents[intent_id]["status"] == "canceled"
        assert stripe_fake.count("POST", f"/v1/payment_intents/{intent_id}/cancel") == 1
        assert bench.booking_payment(booking["id"]).status == "released"
        late = await bench.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=customer.headers)
        assert_error(late, 409, "INVALID_TRANSITION")
        assert [e["status"] for e in bench.events("booking:status")] == ["EXPIRED"]
        assert bench.events("slots:changed")[-1]["free"] is True
    finally:
        bench.close()


async def test_a_customer_cancelling_early_pays_nothing(bookings: BookingBench) -> None:
    _, customer, booking = await _confirmed(bookings, days=5)
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/cancel",
                                       json={"reason": "plans changed"}, headers=customer.headers)
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    bookings.run_settles()
    payment = bookings.booking_payment(booking["id"])
    assert payment.status == "released" and payment.amount_captured == 0
    (notice,) = bookings.notes("booking_cancelled")
    assert "by the customer" in notice.body


async def test_a_late_cancellation_takes_the_late_fee_from_the_hold(bookings: BookingBench) -> None:
    _, customer, booking = await _confirmed(bookings, days=3)
    with bookings.market.db.begin() as session:  # the start is now less than a day away
        session.execute(text("UPDATE bookings SET starts_at = now() + interval '3 hours' WHERE id = :id"),
                        {"id": uuid.UUID(booking["id"])})
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=customer.headers)
    assert response.status_code == 200
    bookings.run_settles()
    payment = bookings.booking_payment(booking["id"])
    assert payment.amount_captured == 2000 and payment.cancellation_fee == 2000
    assert bookings.fake.payment_intents[payment.payment_intent_id]["amount_received"] == 2000


async def test_the_provider_cancelling_never_costs_the_customer(bookings: BookingBench) -> None:
    provider, customer, booking = await _confirmed(bookings, days=3)
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=provider.headers)
    assert response.status_code == 200
    bookings.run_settles()
    assert bookings.booking_payment(booking["id"]).status == "released"
    (notice,) = bookings.notes("booking_cancelled")
    assert str(notice.user_id) == customer.id and "by the provider" in notice.body


async def test_completion_captures_the_price_and_writes_the_ledger(bookings: BookingBench) -> None:
    provider, customer, booking = await _confirmed(bookings)
    early = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/complete", headers=provider.headers)
    assert assert_error(early, 409, "CONFLICT")["reason"] == "NOT_STARTED"
    _started(bookings, booking["id"])
    complete = f"/api/v1/bookings/{booking['id']}/complete"
    by_customer = await bookings.api.post(complete, headers=customer.headers)
    assert_error(by_customer, 403, "FORBIDDEN")  # it may see the booking, not complete it
    done = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/complete", headers=provider.headers)
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    bookings.run_settles()
    bookings.settle(booking["id"])  # redelivered
    payment = bookings.booking_payment(booking["id"])
    assert payment.status == "captured" and payment.amount_captured == 4000
    earnings = await bookings.api.get("/api/v1/drivers/me/earnings", headers=provider.headers)
    entries = {(e["kind"], e["amount"]["amount"], e["bookingId"]) for e in earnings.json()["items"]}
    assert ("driver_earning", 3400, booking["id"]) in entries
    with bookings.market.db() as session:
        ledger = dict(session.execute(text("SELECT kind, amount FROM ledger_entries WHERE booking_id = :id"),
                                      {"id": uuid.UUID(booking["id"])}).all())
    assert ledger == {"driver_earning": 3400, "platform_commission": 600}


async def test_a_no_show_takes_the_no_show_fee(bookings: BookingBench) -> None:
    provider, _, booking = await _confirmed(bookings)
    _started(bookings, booking["id"])
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/no-show", headers=provider.headers)
    assert response.status_code == 200 and response.json()["status"] == "NO_SHOW"
    bookings.run_settles()
    assert bookings.booking_payment(booking["id"]).amount_captured == 4000  # 100 % by default


async def test_card_bookings_need_a_provider_who_can_be_paid(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    refused = await bookings.hold(customer, provider, at_local(3, 10), expect=409)
    assert refused["error"]["details"]["reason"] == "DRIVER_PAYOUTS_NOT_ENABLED"


async def test_reminders_go_once_each_and_never_to_a_cancelled_booking(bookings: BookingBench) -> None:
    _, customer, booking = await _confirmed(bookings, days=3)
    offsets = sorted(job.args[1] for job in bookings.jobs("bookings.remind", booking["id"]))
    assert offsets == [3600, 86400]
    assert bookings.remind(booking["id"], 86400)
    assert not bookings.remind(booking["id"], 86400)  # redelivered
    (reminder,) = bookings.notes("booking_reminder")
    assert "starts in 24 hours" in reminder.body and str(reminder.user_id) == customer.id
    cancel = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=customer.headers)
    assert cancel.status_code == 200
    assert not bookings.remind(booking["id"], 3600)
    assert len(bookings.notes("booking_reminder")) == 1
