"""Time-slot bookings over HTTP on real PostgreSQL and Redis: a provider's week, its free slots, holds
that never overlap (PostgreSQL's exclusion constraint decides), expiry, confirmation, the end of a
booking and what it costs, and who may see what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.stripe_server import FakeStripe
from tests.integration.bookings_support import (
    BookingBench,
    at_local,
    bookings,
    iso,
    schedule_body,
    with_bookings,
)
from tests.integration.conftest import AppFactory
from tests.integration.market_support import Call, assert_error, at_once
from tests.integration.payments_support import paid_settings, stripe_fake
from tests.integration.test_farmctl_regions import farmctl

__all__ = ["bookings", "paid_settings", "stripe_fake"]


async def test_a_provider_publishes_its_week_and_its_free_slots_are_listed(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    start = at_local(3, 0)
    free = await bookings.slots(provider, start, start + timedelta(days=1))
    assert free[0] == iso(at_local(3, 8)) and free[-1] == iso(at_local(3, 19))
    assert len(free) == 12
    mine = await bookings.api.get("/api/v1/providers/me/schedule", headers=provider.headers)
    assert mine.json()["timeZone"] == "Europe/Berlin" and mine.json()["slotMinutes"] == 60


async def test_a_hold_is_201_held_with_its_expiry_and_takes_the_slot_off_the_list(
        bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    start = at_local(2, 10)
    before = datetime.now(UTC)
    booking = await bookings.hold(customer, provider, start, method="cash")
    assert booking["status"] == "HELD" and booking["price"] == {"amount": 4000, "currency": "EUR"}
    expires = datetime.fromisoformat(booking["holdExpiresAt"])
    assert timedelta(minutes=10) <= expires - before < timedelta(minutes=10, seconds=30)
    assert booking["history"][0]["from"] is None and booking["history"][0]["to"] == "HELD"
    free = await bookings.slots(provider, at_local(2, 0), at_local(3, 0))
    assert iso(start) not in free and iso(start + timedelta(hours=1)) in free


async def test_of_100_concurrent_holds_of_one_slot_exactly_one_wins(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customers = [await bookings.market.customer() for _ in range(100)]
    body = bookings.body(provider, at_local(4, 12), method="cash")
    calls = [Call(bookings.api, "POST", "/api/v1/bookings", c.headers, body) for c in customers]
    responses = await at_once(calls)
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 99, codes
    refused = [r for r in responses if r.status_code == 409]
    assert all(r.json()["error"]["details"]["reason"] == "SLOT_TAKEN" for r in refused)


async def test_overlapping_but_unequal_ranges_conflict_too(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False, slotMinutes=30)
    customers = [await bookings.market.customer() for _ in range(3)]
    start = at_local(5, 10)
    bodies = [bookings.body(provider, start, hours=1, method="cash"),  # 10:00-11:00
              bookings.body(provider, start + timedelta(minutes=30), hours=1, method="cash"),  # 10:30-11:30
              bookings.body(provider, start - timedelta(minutes=30), hours=2, method="cash")]  # 09:30-11:30
    responses = await at_once([Call(bookings.api, "POST", "/api/v1/bookings", c.headers, b)
                               for c, b in zip(customers, bodies, strict=True)])
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    # a range next to the winner's (touching, not overlapping) is free
    winner = next(b for b, r in zip(bodies, responses, strict=True) if r.status_code == 201)
    after = datetime.fromisoformat(winner["end"])
    await bookings.hold(customers[0], provider, after, hours=0.5, method="cash")


async def test_the_buffer_keeps_the_next_booking_away(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False, bufferMinutes=15)
    first, second = await bookings.market.customer(), await bookings.market.customer()
    assert (await bookings.slots(provider, at_local(6, 8), at_local(6, 11)))[:3] == [
        iso(at_local(6, 8)), iso(at_local(6, 9, 15)), iso(at_local(6, 10, 30))]
    await bookings.hold(first, provider, at_local(6, 10, 30), method="cash")  # keeps 10:30-11:45
    # two slots from 09:15 would end at 11:15 and keep its buffer until 11:30: refused by PostgreSQL
    refused = await bookings.hold(second, provider, at_local(6, 9, 15), hours=2, method="cash", expect=409)
    assert refused["error"]["details"]["reason"] == "SLOT_TAKEN"
    await bookings.hold(second, provider, at_local(6, 9, 15), method="cash")  # 09:15-10:15 (+15) fits
    off_grid = await bookings.hold(second, provider, at_local(6, 12), method="cash", expect=400)
    assert "start" in off_grid["error"]["details"]


async def test_a_lapsed_hold_frees_its_slot_the_moment_it_expires(
        make_client: AppFactory, paid_settings: object, stripe_fake: FakeStripe) -> None:
    settings = with_bookings(paid_settings, hold_ttl_s=1)  # type: ignore[arg-type]
    bench = BookingBench(await make_client(settings), settings, stripe_fake)
    await bench.market.region()
    try:
        provider = await bench.provider(card=False)
        first, second = await bench.market.customer(), await bench.market.customer()
        start = at_local(2, 14)
        held = await bench.hold(first, provider, start, method="cash")
        await bench.hold(second, provider, start, method="cash", expect=409)
        expires = datetime.fromisoformat(held["holdExpiresAt"])
        while datetime.now(UTC) < expires:  # the hold's own deadline, not a guess
            await bench.market_pause()
        assert iso(start) in await bench.slots(provider, at_local(2, 0), at_local(3, 0))
        taken = await bench.hold(second, provider, start, method="cash")  # no expiry job has run
        assert taken["status"] == "HELD"
        lapsed = await bench.booking(first, held["id"])
        assert lapsed["status"] == "EXPIRED" and lapsed["history"][-1]["by"]["role"] == "system"
        assert not bench.expire(held["id"])  # its job, when it comes, finds nothing to do
    finally:
        bench.close()


async def test_a_cash_hold_is_confirmed_by_its_customer_and_both_parties_are_told(
        bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    booking = await bookings.hold(customer, provider, at_local(3, 15), method="cash")
    response = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=customer.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CONFIRMED" and response.json()["confirmedAt"]
    again = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=customer.headers)
    assert again.json()["status"] == "CONFIRMED"
    assert [str(n.user_id) for n in bookings.notes("slot_confirmed")] == [customer.id]
    assert len(bookings.notes("slot_booked")) == 1
    reminders = bookings.jobs("bookings.remind", booking["id"])
    start = datetime.fromisoformat(booking["start"])
    assert sorted(j.due_at for j in reminders) == [start - timedelta(hours=24), start - timedelta(hours=1)]


async def test_confirming_after_the_hold_expired_is_409(make_client: AppFactory, paid_settings: object,
                                                       stripe_fake: FakeStripe) -> None:
    settings = with_bookings(paid_settings, hold_ttl_s=1)  # type: ignore[arg-type]
    bench = BookingBench(await make_client(settings), settings, stripe_fake)
    await bench.market.region()
    try:
        provider = await bench.provider(card=False)
        customer = await bench.market.customer()
        held = await bench.hold(customer, provider, at_local(2, 16), method="cash")
        while datetime.now(UTC) < datetime.fromisoformat(held["holdExpiresAt"]):
            await bench.market_pause()
        response = await bench.api.post(f"/api/v1/bookings/{held['id']}/confirm", headers=customer.headers)
        details = assert_error(response, 409, "INVALID_TRANSITION")
        assert details == {"from": "EXPIRED", "to": "CONFIRMED"}
    finally:
        bench.close()


async def test_another_customers_booking_is_404_and_a_stranger_driver_too(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer, other = await bookings.market.customer(), await bookings.market.customer()
    stranger = await bookings.market.driver()
    booking = await bookings.hold(customer, provider, at_local(3, 9), method="cash")
    for who in (other, stranger):
        response = await bookings.api.get(f"/api/v1/bookings/{booking['id']}", headers=who.headers)
        assert_error(response, 404, "NOT_FOUND")
        cancel = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/cancel", headers=who.headers)
        assert_error(cancel, 404, "NOT_FOUND")
    seen = await bookings.api.get(f"/api/v1/bookings/{booking['id']}", headers=provider.headers)
    assert seen.status_code == 200 and seen.json()["payment"]["clientSecret"] is None


@pytest.mark.parametrize("body, field", [
    ({"start": "2026-01-01T10:00:00"}, "start"),  # no offset
    ({"paymentMethod": "bitcoin"}, "paymentMethod"),
    ({"colour": "red"}, "colour"),
])
async def test_bad_holds_are_400_validation_error(bookings: BookingBench, body: dict[str, str],
                                                  field: str) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    request = {**bookings.body(provider, at_local(3, 10), method="cash"), **body}
    response = await bookings.api.post("/api/v1/bookings", json=request, headers=customer.headers)
    details = assert_error(response, 400, "VALIDATION_ERROR")
    assert any(field in key for key in details), details


async def test_a_hold_outside_the_providers_hours_or_not_whole_slots_is_refused(
        bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    late = await bookings.hold(customer, provider, at_local(3, 19, 30), method="cash", expect=409)
    assert late["error"]["details"]["reason"] == "OUTSIDE_WORKING_HOURS"
    odd = await bookings.hold(customer, provider, at_local(3, 10), hours=0.75, method="cash", expect=400)
    assert odd["error"]["code"] == "VALIDATION_ERROR"
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    past = await bookings.hold(customer, provider, an_hour_ago, method="cash", expect=400)
    assert "start" in past["error"]["details"]


async def test_admins_list_every_booking_with_filters(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    admin = await bookings.market.admin()
    first = await bookings.hold(customer, provider, at_local(3, 9), method="cash")
    await bookings.hold(customer, provider, at_local(3, 11), method="cash")
    await bookings.api.post(f"/api/v1/bookings/{first['id']}/confirm", headers=customer.headers)
    listed = await bookings.api.get("/api/v1/admin/bookings", headers=admin.headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2
    confirmed = await bookings.api.get("/api/v1/admin/bookings", params={"status": "CONFIRMED"},
                                       headers=admin.headers)
    assert [b["id"] for b in confirmed.json()["items"]] == [first["id"]]
    refused = await bookings.api.get("/api/v1/admin/bookings", headers=customer.headers)
    assert_error(refused, 403, "FORBIDDEN")
    mine = await bookings.api.get("/api/v1/bookings", params={"limit": 1}, headers=customer.headers)
    assert len(mine.json()["items"]) == 1 and mine.json()["nextCursor"]


async def test_a_customer_keeps_at_most_the_cap_of_unconfirmed_holds(
        make_client: AppFactory, paid_settings: object, stripe_fake: FakeStripe) -> None:
    settings = with_bookings(paid_settings, holds_per_customer=2)  # type: ignore[arg-type]
    bench = BookingBench(await make_client(settings), settings, stripe_fake)
    await bench.market.region()
    try:
        provider = await bench.provider(card=False)
        customer = await bench.market.customer()
        first = await bench.hold(customer, provider, at_local(3, 9), method="cash")
        await bench.hold(customer, provider, at_local(3, 10), method="cash")
        refused = await bench.hold(customer, provider, at_local(3, 11), method="cash", expect=409)
        assert refused["error"]["details"] == {"reason": "HOLD_LIMIT", "limit": 2}
        # a confirmed booking no longer counts
        await bench.api.post(f"/api/v1/bookings/{first['id']}/confirm", headers=customer.headers)
        await bench.hold(customer, provider, at_local(3, 11), method="cash")
    finally:
        bench.close()


@pytest.mark.parametrize(("day", "first", "last"), [
    ("2027-03-28", "2027-03-28T07:00:00Z", "2027-03-28T14:00:00Z"),  # the last Sunday of March: CEST
    ("2027-03-27", "2027-03-27T08:00:00Z", "2027-03-27T15:00:00Z"),
    ("2027-10-31", "2027-10-31T08:00:00Z", "2027-10-31T15:00:00Z"),  # the last Sunday of October: CET
    ("2027-10-30", "2027-10-30T07:00:00Z", "2027-10-30T14:00:00Z"),
])
async def test_a_berlin_provider_has_the_right_utc_slots_on_the_dst_sundays(
        make_client: AppFactory, paid_settings: object, stripe_fake: FakeStripe, day: str, first: str,
        last: str) -> None:
    settings = with_bookings(paid_settings, horizon_days=700)  # type: ignore[arg-type]
    bookings = BookingBench(await make_client(settings), settings, stripe_fake)
    await bookings.market.region()
    week = [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(7)]
    provider = await bookings.provider(card=False, weeklyHours=week)
    start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    response = await bookings.api.get(f"/api/v1/providers/{provider.id}/slots",
                                      params={"from": iso(start), "to": iso(start + timedelta(days=1))})
    items = response.json()["items"]
    assert (items[0]["start"], items[-1]["start"], len(items)) == (first, last, 8)
    assert all(item["localStart"][11:16] == f"{9 + i:02d}:00" for i, item in enumerate(items))
    bookings.close()


async def test_regions_set_the_slot_length_of_providers_who_set_none(
        bookings: BookingBench, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await farmctl(capsys, "regions", "set", "BER", "--name", "Berlin", "--currency", "EUR",
                                 "--commission", "0.15", "--slot-minutes", "30", "--buffer-minutes", "10")
    assert code == 0 and "30 min + 10 min buffer" in out
    provider = await bookings.provider(card=False, slotMinutes=None, bufferMinutes=None)
    mine = await bookings.api.get("/api/v1/providers/me/schedule", headers=provider.headers)
    assert (mine.json()["slotMinutes"], mine.json()["bufferMinutes"]) == (30, 10)
    start = at_local(3, 8)
    free = await bookings.slots(provider, start, start + timedelta(hours=1, minutes=30))
    assert free == [iso(start), iso(start + timedelta(minutes=40)), iso(start + timedelta(minutes=80))]


async def test_the_openapi_document_lists_the_booking_routes(bookings: BookingBench) -> None:
    paths = (await bookings.api.get("/schema/openapi.json")).json()["paths"]
    for path in ("/api/v1/bookings", "/api/v1/bookings/{booking_id}", "/api/v1/bookings/{booking_id}/confirm",
                 "/api/v1/providers/{provider_id}/slots", "/api/v1/providers/me/schedule",
                 "/api/v1/admin/bookings"):
        assert path in paths, sorted(paths)


@pytest.mark.parametrize(("change", "field"), [
    ({"timeZone": "Mars/Olympus"}, "schedule"),
    ({"price": {"amount": 4000, "currency": "USD"}}, "price.currency"),
    ({"weeklyHours": [{"weekday": 0, "start": "09:00", "end": "12:00"},
                      {"weekday": 0, "start": "11:00", "end": "13:00"}]}, "schedule"),
    ({"weeklyHours": [{"weekday": 7, "start": "09:00", "end": "12:00"}]}, "weeklyHours"),
    ({"weeklyHours": [{"weekday": 1, "start": "9am", "end": "12:00"}]}, "weeklyHours"),
    ({"region": "NOWHERE"}, "region"),
])
async def test_a_schedule_that_cannot_be_kept_is_400_and_changes_nothing(
        bookings: BookingBench, change: dict[str, object], field: str) -> None:
    provider = await bookings.provider(card=False)
    before = (await bookings.api.get("/api/v1/providers/me/schedule", headers=provider.headers)).json()
    response = await bookings.api.put("/api/v1/providers/me/schedule", json=schedule_body(**change),
                                      headers=provider.headers)
    details = assert_error(response, 400, "VALIDATION_ERROR")
    assert any(key.startswith(field) for key in details), details
    after = (await bookings.api.get("/api/v1/providers/me/schedule", headers=provider.headers)).json()
    assert after == before
    customer = await bookings.market.customer()
    refused = await bookings.api.put("/api/v1/providers/me/schedule", json=schedule_body(),
                                     headers=customer.headers)
    assert_error(refused, 403, "FORBIDDEN")


async def test_the_provider_may_see_a_booking_but_not_confirm_it(bookings: BookingBench) -> None:
    provider = await bookings.provider(card=False)
    customer = await bookings.market.customer()
    booking = await bookings.hold(customer, provider, at_local(3, 9), method="cash")
    confirm = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/confirm", headers=provider.headers)
    assert_error(confirm, 403, "FORBIDDEN")
    intent = await bookings.api.post(f"/api/v1/bookings/{booking['id']}/intent", headers=provider.headers)
    assert_error(intent, 403, "FORBIDDEN")
    assert (await bookings.booking(customer, booking["id"]))["status"] == "HELD"
