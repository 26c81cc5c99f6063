"""The booking state machine and its moves, without I/O: who may move a booking where, what each
move leaves (history, `booking:status` to both parties, `slots:changed` when time is freed or
taken), and the cancellation policy's fee."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.services.bookings.lifecycle import fee_owed
from app.services.bookings.moves import BookingState, made, move
from app.services.bookings.notices import lead_text, when_text
from app.services.ride_moves import BY_SYSTEM, Mover
from app.settings import Settings
from models import BookingStatus as S
from models.booking_states import ADMIN, CUSTOMER, FINAL, PROVIDER, SYSTEM, TRANSITIONS, may_move
from models.errors import InvalidTransition

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CUSTOMER_ID, PROVIDER_ID = uuid.uuid4(), uuid.uuid4()


def state(status: S = S.HELD) -> BookingState:
    return BookingState(uuid.uuid4(), status, CUSTOMER_ID, PROVIDER_ID, NOW + timedelta(days=2),
                        NOW + timedelta(days=2, hours=1))


@pytest.mark.parametrize(("before", "after", "roles"), [
    (S.HELD, S.CONFIRMED, {CUSTOMER, SYSTEM}),
    (S.HELD, S.EXPIRED, {SYSTEM}),
    (S.HELD, S.CANCELLED, {CUSTOMER, PROVIDER, ADMIN}),
    (S.CONFIRMED, S.CANCELLED, {CUSTOMER, PROVIDER, ADMIN}),
    (S.CONFIRMED, S.COMPLETED, {PROVIDER, ADMIN}),
    (S.CONFIRMED, S.NO_SHOW, {PROVIDER, ADMIN}),
])
def test_each_move_is_allowed_to_exactly_its_roles(before: S, after: S, roles: set[str]) -> None:
    for role in (CUSTOMER, PROVIDER, ADMIN, SYSTEM):
        assert may_move(before, after, role) is (role in roles), role


def test_a_final_booking_never_moves_again() -> None:
    assert {S.EXPIRED, S.CANCELLED, S.COMPLETED, S.NO_SHOW} == FINAL
    assert not [pair for pair in TRANSITIONS if pair[0] in FINAL]
    with pytest.raises(InvalidTransition) as refused:
        move(state(S.EXPIRED), S.CONFIRMED, by=Mover(CUSTOMER, CUSTOMER_ID), at=NOW)
    assert refused.value.details == {"from": "EXPIRED", "to": "CONFIRMED"}


def test_a_customer_cannot_complete_its_own_booking() -> None:
    with pytest.raises(InvalidTransition):
        move(state(S.CONFIRMED), S.COMPLETED, by=Mover(CUSTOMER, CUSTOMER_ID), at=NOW)


def test_a_move_tells_both_parties_and_frees_the_calendar_when_a_live_booking_ends() -> None:
    moved = move(state(S.CONFIRMED), S.CANCELLED, by=Mover(PROVIDER, PROVIDER_ID), at=NOW, reason="ill")
    assert moved.event["status"] == "CANCELLED" and moved.event["from"] == "CONFIRMED"
    assert moved.event["by"] == {"id": str(PROVIDER_ID), "role": "provider"}
    assert moved.rooms == [f"user:{CUSTOMER_ID}", f"user:{PROVIDER_ID}"]
    assert moved.frees_or_takes_time
    payload, room = moved.slots_event
    assert room == f"calendar:{PROVIDER_ID}" and payload["free"] is True


def test_confirming_keeps_the_time_taken_so_the_calendar_is_not_told() -> None:
    assert not move(state(), S.CONFIRMED, by=BY_SYSTEM, at=NOW).frees_or_takes_time
    hold = made(state(), by=Mover(CUSTOMER, CUSTOMER_ID), at=NOW)
    assert hold.frees_or_takes_time and hold.slots_event[0]["free"] is False
    assert hold.event["from"] is None


@dataclass
class _Booking:
    status: str
    payment_method: str
    starts_at: datetime
    amount: int = 4000
    currency: str = "EUR"


@pytest.mark.parametrize(("party", "target", "hours_ahead", "method", "status", "fee"), [
    (CUSTOMER, S.CANCELLED, 48, "card", "CONFIRMED", 0),  # early: free
    (CUSTOMER, S.CANCELLED, 3, "card", "CONFIRMED", 2000),  # late: 50 %
    (CUSTOMER, S.CANCELLED, 3, "card", "HELD", 0),  # a hold never costs
    (PROVIDER, S.CANCELLED, 3, "card", "CONFIRMED", 0),  # the provider's cancellation never costs
    (ADMIN, S.CANCELLED, 3, "card", "CONFIRMED", 0),
    (PROVIDER, S.NO_SHOW, -1, "card", "CONFIRMED", 4000),  # 100 %
    (PROVIDER, S.NO_SHOW, -1, "cash", "CONFIRMED", 0),  # nothing to take a fee from
])
def test_the_cancellation_policy_by_time_before_the_start(party: str, target: S, hours_ahead: int,
                                                          method: str, status: str, fee: int) -> None:
    booking = _Booking(status, method, NOW + timedelta(hours=hours_ahead))
    assert fee_owed(Settings(), booking, party, target, NOW) == fee  # type: ignore[arg-type]


def test_a_fee_rounds_down_to_what_the_currency_can_charge() -> None:
    settings = Settings()
    booking = _Booking("CONFIRMED", "card", NOW + timedelta(hours=1), amount=12350, currency="TND")
    rate = settings.bookings.late_cancellation_fee_rate
    assert rate == Decimal("0.50")
    assert fee_owed(settings, booking, CUSTOMER, S.CANCELLED, NOW) == 6170  # type: ignore[arg-type]


def test_messages_name_the_start_on_the_providers_clock() -> None:
    assert when_text(datetime(2026, 3, 29, 7, 0, tzinfo=UTC), "Europe/Berlin") == "Sun 29 Mar 09:00 CEST"
    assert when_text(datetime(2026, 3, 28, 8, 0, tzinfo=UTC), "Europe/Berlin") == "Sat 28 Mar 09:00 CET"
    assert (lead_text(86400), lead_text(3600), lead_text(1800)) == ("24 hours", "1 hour", "30 minutes")
