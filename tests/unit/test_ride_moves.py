"""A ride's move, decided without a database: the state checked, the ride moved, what it leaves behind."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.dialects import postgresql

from app.errors import InvalidTransition
from app.services.ride_moves import BY_SYSTEM, Mover, RideMoved, RideState, move
from models import RideStatus as S
from models.ride_states import ADMIN, CUSTOMER, DRIVER, SYSTEM

RIDE = uuid.UUID("00000000-0000-4000-8000-000000000001")
CUSTOMER_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
DRIVER_ID = uuid.UUID("00000000-0000-4000-8000-000000000003")
AT = datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=UTC)


def ride(status: S, driver_id: uuid.UUID | None = DRIVER_ID) -> RideState:
    return RideState(RIDE, status, CUSTOMER_ID, driver_id)


def test_the_driver_s_step_moves_the_ride_and_says_from_where_by_whom_and_when() -> None:
    moved = move(ride(S.BID_ACCEPTED), S.DRIVER_ARRIVING, by=Mover(DRIVER, DRIVER_ID), at=AT)

    assert (moved.ride_id, moved.before, moved.after) == (RIDE, S.BID_ACCEPTED, S.DRIVER_ARRIVING)
    assert moved.ride == ride(S.DRIVER_ARRIVING)
    assert (moved.by, moved.reason, moved.at) == (Mover(DRIVER, DRIVER_ID), None, AT)


def test_the_ride_status_event_is_the_payload_of_the_contract() -> None:
    moved = move(ride(S.PICKUP_ARRIVED), S.CANCELLED, by=Mover(CUSTOMER, CUSTOMER_ID), at=AT,
                 reason="plans changed")

    assert moved.event == {
        "rideId": str(RIDE), "status": "CANCELLED", "from": "PICKUP_ARRIVED",
        "by": {"id": str(CUSTOMER_ID), "role": "customer"}, "at": "2026-03-01T12:30:05.250000Z",
    }


def test_it_goes_to_the_ride_s_room_and_both_users_rooms() -> None:
    moved = move(ride(S.IN_TRANSIT), S.CANCELLED, by=Mover(ADMIN, uuid.uuid4()), at=AT)

    assert moved.rooms == (f"ride:{RIDE}", f"user:{CUSTOMER_ID}", f"user:{DRIVER_ID}")


def test_a_ride_without_a_driver_is_told_to_its_customer_only() -> None:
    moved = move(ride(S.PENDING_BIDS, driver_id=None), S.NO_DRIVERS_AVAILABLE, by=BY_SYSTEM, at=AT)

    assert moved.rooms == (f"ride:{RIDE}", f"user:{CUSTOMER_ID}")
    assert moved.event["by"] == {"id": None, "role": SYSTEM}


def test_an_accept_tells_the_driver_it_assigns() -> None:
    pending = ride(S.PENDING_BIDS, driver_id=None)

    moved = move(dataclasses.replace(pending, driver_id=DRIVER_ID), S.BID_ACCEPTED,
                 by=Mover(CUSTOMER, CUSTOMER_ID), at=AT)

    assert moved.ride.driver_id == DRIVER_ID
    assert f"user:{DRIVER_ID}" in moved.rooms


def test_the_history_row_records_from_to_by_reason_and_at() -> None:
    moved = move(ride(S.PENDING_BIDS), S.CANCELLED, by=BY_SYSTEM, at=AT, reason="no bid was accepted in time")

    row = moved.history_row.compile(dialect=postgresql.dialect()).params

    assert row == {"ride_id": RIDE, "from_status": "PENDING_BIDS", "to_status": "CANCELLED",
                   "actor_id": None, "actor_role": "system", "reason": "no bid was accepted in time",
                   "at": AT}


@pytest.mark.parametrize(("current", "target", "by"), [
    (S.LOADING, S.CANCELLED, Mover(CUSTOMER, CUSTOMER_ID)),      # too late for the customer
    (S.BID_ACCEPTED, S.PICKUP_ARRIVED, Mover(DRIVER, DRIVER_ID)),  # a step skipped
    (S.DRIVER_ARRIVING, S.CANCELLED, BY_SYSTEM),                  # the system stops before set-off
    (S.COMPLETED, S.CANCELLED, Mover(ADMIN, uuid.uuid4())),       # a final state
])
def test_a_move_the_table_refuses_is_an_invalid_transition(current: S, target: S, by: Mover) -> None:
    with pytest.raises(InvalidTransition) as refused:
        move(ride(current), target, by=by, at=AT)

    assert refused.value.details == {"from": current.value, "to": target.value}


def test_the_move_is_immutable_and_leaves_the_given_ride_as_it_was() -> None:
    before = ride(S.DROPOFF_ARRIVED)

    moved = move(before, S.COMPLETED, by=Mover(DRIVER, DRIVER_ID), at=AT)

    assert before.status == S.DROPOFF_ARRIVED
    assert isinstance(moved, RideMoved)
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.reason = "changed"  # type: ignore[misc]
