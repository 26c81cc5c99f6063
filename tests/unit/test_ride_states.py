"""The ride state machine, checked exhaustively: every pair of states and every role."""

from __future__ import annotations

import itertools

import pytest

from app.errors import InvalidTransition
from models import RideStatus as S
from models.ride_states import ADMIN, CUSTOMER, DRIVER, ROLES, SYSTEM, check_move, next_driver_step

# The contract of API.md, written out by hand (not derived from the table under test).
ALLOWED: set[tuple[S, S, str]] = {
    (S.PENDING_BIDS, S.BID_ACCEPTED, CUSTOMER),
    (S.PENDING_BIDS, S.NO_DRIVERS_AVAILABLE, SYSTEM),
    (S.BID_ACCEPTED, S.DRIVER_ARRIVING, DRIVER),
    (S.DRIVER_ARRIVING, S.PICKUP_ARRIVED, DRIVER),
    (S.PICKUP_ARRIVED, S.LOADING, DRIVER),
    (S.LOADING, S.IN_TRANSIT, DRIVER),
    (S.IN_TRANSIT, S.DROPOFF_ARRIVED, DRIVER),
    (S.DROPOFF_ARRIVED, S.COMPLETED, DRIVER),
    *((status, S.CANCELLED, CUSTOMER)
      for status in (S.PENDING_BIDS, S.BID_ACCEPTED, S.DRIVER_ARRIVING, S.PICKUP_ARRIVED)),
    # the system: bids nobody accepted in time, a card hold nobody authorized in time
    (S.PENDING_BIDS, S.CANCELLED, SYSTEM),
    (S.BID_ACCEPTED, S.CANCELLED, SYSTEM),
    *((status, S.CANCELLED, ADMIN)
      for status in (S.PENDING_BIDS, S.BID_ACCEPTED, S.DRIVER_ARRIVING, S.PICKUP_ARRIVED, S.LOADING,
                     S.IN_TRANSIT, S.DROPOFF_ARRIVED)),
}

EVERY_MOVE = list(itertools.product(S, S, ROLES))


@pytest.mark.parametrize(("current", "target", "role"), sorted(ALLOWED))
def test_an_allowed_move_passes(current: S, target: S, role: str) -> None:
    check_move(current, target, role)


@pytest.mark.parametrize(("current", "target", "role"),
                         [m for m in EVERY_MOVE if m not in ALLOWED])
def test_every_other_move_is_an_invalid_transition_naming_from_and_to(
    current: S, target: S, role: str
) -> None:
    with pytest.raises(InvalidTransition) as refused:
        check_move(current, target, role)
    assert refused.value.status_code == 409
    assert refused.value.details == {"from": current.value, "to": target.value}


def test_final_states_allow_no_move_at_all() -> None:
    for final in (S.COMPLETED, S.CANCELLED, S.NO_DRIVERS_AVAILABLE):
        assert not [m for m in ALLOWED if m[0] == final]
        with pytest.raises(InvalidTransition):
            check_move(final, S.CANCELLED, ADMIN)


def test_the_driver_walks_one_step_at_a_time() -> None:
    walk = [S.BID_ACCEPTED]
    while (step := next_driver_step(walk[-1])) is not None:
        walk.append(step)
    assert walk == [S.BID_ACCEPTED, S.DRIVER_ARRIVING, S.PICKUP_ARRIVED, S.LOADING, S.IN_TRANSIT,
                    S.DROPOFF_ARRIVED, S.COMPLETED]
    assert next_driver_step(S.PENDING_BIDS) is None


def test_the_system_cancels_only_before_the_driver_sets_off() -> None:
    check_move(S.PENDING_BIDS, S.CANCELLED, SYSTEM)  # no bid accepted within the acceptance window
    check_move(S.BID_ACCEPTED, S.CANCELLED, SYSTEM)  # the card hold was not authorized in time
    for later in (S.DRIVER_ARRIVING, S.PICKUP_ARRIVED, S.LOADING, S.IN_TRANSIT, S.DROPOFF_ARRIVED):
        with pytest.raises(InvalidTransition):
            check_move(later, S.CANCELLED, SYSTEM)
