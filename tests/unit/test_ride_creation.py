"""Which pickup times a ride may be booked for, and what its row says (no I/O)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import ValidationFailed
from app.services import ride_creation
from app.services.ride_creation import Place, RideRequest, check_schedule, ride_row
from app.settings import DispatchSettings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DISPATCH = DispatchSettings()  # 15 min to 30 days ahead


@pytest.mark.parametrize("ahead", [timedelta(minutes=15), timedelta(hours=5), timedelta(days=30)],
                         ids=["the-minimum", "hours", "the-horizon"])
def test_a_pickup_time_within_the_window_is_taken_bounds_included(ahead: timedelta) -> None:
    check_schedule(NOW + ahead, NOW, DISPATCH)


@pytest.mark.parametrize(("ahead", "problem"), [
    (timedelta(minutes=15) - timedelta(microseconds=1), "must be at least 15 min from now"),
    (-timedelta(days=1), "must be at least 15 min from now"),
    (timedelta(days=30, seconds=1), "must be at most 30 days from now"),
], ids=["just-too-soon", "past", "just-too-far"])
def test_a_pickup_time_out_of_the_window_is_refused_naming_the_field(ahead: timedelta, problem: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_schedule(NOW + ahead, NOW, DISPATCH)
    assert refused.value.details == {"scheduledFor": problem}


def test_a_ride_booked_ahead_is_confirmed_with_its_pickup_time_and_an_immediate_one_as_before() -> None:
    request = RideRequest(pickup=Place(52.52, 13.40, "Alexanderplatz 1"), dropoff=Place(52.50, 13.45),
                          vehicle_type="van", region="BER", payment_method="cash")
    ride_id = uuid.uuid4()

    def columns(request: RideRequest) -> dict[str, object]:
        return dict(zip(ride_creation._NAMES, ride_row(ride_id, uuid.uuid4(), request, NOW), strict=True))

    now = columns(request)
    ahead = columns(dataclasses.replace(request, scheduled_for=NOW + timedelta(hours=3)))

    assert now["scheduled_for"] is None and now["dedupe_key"] == f"ride:{ride_id}:booking_confirmed"
    assert "We are asking drivers nearby" in str(now["body"])
    assert ahead["scheduled_for"] == NOW + timedelta(hours=3)
    assert ahead["dedupe_key"] == f"ride:{ride_id}:ride_scheduled"
    assert "booked for 15:00 UTC on 2026-12-03" in str(ahead["body"])
