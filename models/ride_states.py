"""The ride state machine, as data: which move each role may make, and one pure function.

API.md: a customer may cancel in PENDING_BIDS, BID_ACCEPTED, DRIVER_ARRIVING, PICKUP_ARRIVED (not
from LOADING on); an admin in any non-final state; the assigned driver walks the ride forward one
step at a time; the system ends a ride nobody bid on, cancels one whose bids nobody accepted in
time (`PENDING_BIDS`) and one whose card hold was not authorized in time (`BID_ACCEPTED`).
Accepting a bid is the customer's move.
"""

from __future__ import annotations

import itertools
from typing import Final

from models.errors import InvalidTransition
from models.rides import RideStatus as S

CUSTOMER: Final = "customer"
DRIVER: Final = "driver"
ADMIN: Final = "admin"
SYSTEM: Final = "system"
ROLES: Final = (CUSTOMER, DRIVER, ADMIN, SYSTEM)

FINAL: Final = frozenset({S.COMPLETED, S.CANCELLED, S.NO_DRIVERS_AVAILABLE})

#: The driver's forward path, one step at a time.
DRIVER_PATH: Final = (
    S.BID_ACCEPTED, S.DRIVER_ARRIVING, S.PICKUP_ARRIVED, S.LOADING, S.IN_TRANSIT, S.DROPOFF_ARRIVED,
    S.COMPLETED,
)
CUSTOMER_MAY_CANCEL: Final = frozenset({S.PENDING_BIDS, S.BID_ACCEPTED, S.DRIVER_ARRIVING, S.PICKUP_ARRIVED})
#: The system cancels a ride only before the driver set off (`app.services.ride_expiry`).
SYSTEM_MAY_CANCEL: Final = frozenset({S.PENDING_BIDS, S.BID_ACCEPTED})


def _table() -> dict[tuple[S, S], frozenset[str]]:
    table: dict[tuple[S, S], frozenset[str]] = {
        (S.PENDING_BIDS, S.BID_ACCEPTED): frozenset({CUSTOMER}),
        (S.PENDING_BIDS, S.NO_DRIVERS_AVAILABLE): frozenset({SYSTEM}),
    }
    for before, after in itertools.pairwise(DRIVER_PATH):
        table[(before, after)] = frozenset({DRIVER})
    for status in S:
        if status not in FINAL:
            allowed = {ADMIN} | ({CUSTOMER} if status in CUSTOMER_MAY_CANCEL else set())
            allowed |= {SYSTEM} if status in SYSTEM_MAY_CANCEL else set()
            table[(status, S.CANCELLED)] = frozenset(allowed)
    return table


#: (from, to) → the roles that may make that move. Anything absent is refused.
TRANSITIONS: Final[dict[tuple[S, S], frozenset[str]]] = _table()


def may_move(current: S, target: S, role: str) -> bool:
    return role in TRANSITIONS.get((current, target), frozenset())


def check_move(current: S, target: S, role: str) -> None:
    """Raise `InvalidTransition` (409, details `from`/`to`) unless `role` may move the ride."""
    if not may_move(current, target, role):
        raise InvalidTransition(current.value, target.value)


def next_driver_step(current: S) -> S | None:
    """The one status the assigned driver may move to next, if any."""
    if current in DRIVER_PATH[:-1]:
        return DRIVER_PATH[DRIVER_PATH.index(current) + 1]
    return None
