"""`farmctl bookings list|show|cancel`: support finds a booking, reads it, and cancels it for the
customer (no fee, both parties told, audited, the payment released by its job)."""

from __future__ import annotations

import json

import pytest

from tests.integration.bookings_support import BookingBench, at_local, bookings
from tests.integration.payments_support import paid_settings, stripe_fake
from tests.integration.test_farmctl_regions import farmctl

__all__ = ["bookings", "paid_settings", "stripe_fake"]


async def test_support_lists_shows_and_cancels_a_booking(bookings: BookingBench,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    held = await bookings.hold(customer, provider, at_local(3, 9), method="cash")
    await bookings.api.post(f"/api/v1/bookings/{held['id']}/confirm", headers=customer.headers)

    code, out, _ = await farmctl(capsys, "bookings", "list", "--status", "CONFIRMED")
    assert code == 0 and held["id"] in out and "CONFIRMED" in out
    code, out, _ = await farmctl(capsys, "bookings", "show", held["id"], "--json")
    record = json.loads(out)
    assert code == 0 and record["status"] == "CONFIRMED" and record["providerId"] == provider.id
    assert [h["to"] for h in record["history"]] == ["HELD", "CONFIRMED"]

    code, out, _ = await farmctl(capsys, "bookings", "cancel", held["id"], "--reason", "provider ill",
                                 "--by", "ops@example.com")
    assert code == 0 and "cancelled" in out
    seen = await bookings.booking(customer, held["id"])
    assert seen["status"] == "CANCELLED" and seen["history"][-1]["reason"] == "provider ill"
    assert seen["history"][-1]["by"]["role"] == "admin"
    notified = sorted(str(n.user_id) for n in bookings.notes("booking_cancelled"))
    assert notified == sorted([customer.id, provider.id])
    code, out, _ = await farmctl(capsys, "audit", "--action", "booking.", "--json")
    entry = json.loads(out.splitlines()[0])
    assert code == 0 and entry["action"] == "booking.cancelled" and entry["operator"] == "ops@example.com"
    assert bookings.jobs("bookings.settle", held["id"])


async def test_nothing_matching_is_exit_1_and_a_bad_id_exit_2(bookings: BookingBench,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await farmctl(capsys, "bookings", "list", "--status", "HELD")
    assert code == 1 and "no booking" in err
    code, _, err = await farmctl(capsys, "bookings", "show", "not-a-uuid")
    assert code == 2
    code, _, err = await farmctl(capsys, "bookings", "show", "6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b")
    assert code == 1 and "No such booking" in err
