"""The booking state machine, as data: which move each role may make, and one pure function.

- `HELD` → `CONFIRMED`: the customer (a cash booking, or a card one whose hold is authorized) or
  the system (the card hold authorized: the webhook, or the job re-reading Stripe);
- `HELD` → `EXPIRED`: the system, at `holdExpiresAt`;
- `HELD` or `CONFIRMED` → `CANCELLED`: the customer, the provider or an admin;
- `CONFIRMED` → `COMPLETED` or `NO_SHOW`: the provider or an admin, once the slot has started.

The roles are the booking's parties (`provider` is the driver whose time is booked), not the
users' account roles.
"""

from __future__ import annotations

from typing import Final

from models.bookings import BookingStatus as S
from models.errors import InvalidTransition

CUSTOMER: Final = "customer"
PROVIDER: Final = "provider"
ADMIN: Final = "admin"
SYSTEM: Final = "system"

FINAL: Final = frozenset({S.EXPIRED, S.CANCELLED, S.COMPLETED, S.NO_SHOW})

#: (from, to) → the roles that may make that move. Anything absent is refused.
TRANSITIONS: Final[dict[tuple[S, S], frozenset[str]]] = {
    (S.HELD, S.CONFIRMED): frozenset({CUSTOMER, SYSTEM}),
    (S.HELD, S.EXPIRED): frozenset({SYSTEM}),
    (S.HELD, S.CANCELLED): frozenset({CUSTOMER, PROVIDER, ADMIN}),
    (S.CONFIRMED, S.CANCELLED): frozenset({CUSTOMER, PROVIDER, ADMIN}),
    (S.CONFIRMED, S.COMPLETED): frozenset({PROVIDER, ADMIN}),
    (S.CONFIRMED, S.NO_SHOW): frozenset({PROVIDER, ADMIN}),
}

#: The moves that wait for the slot's start (a booking can't be completed or missed before it).
AFTER_START: Final = frozenset({S.COMPLETED, S.NO_SHOW})


def may_move(current: S, target: S, role: str) -> bool:
    return role in TRANSITIONS.get((current, target), frozenset())


def check_move(current: S, target: S, role: str) -> None:
    """Raise `InvalidTransition` (409, details `from`/`to`) unless `role` may move the booking."""
    if not may_move(current, target, role):
        raise InvalidTransition(current.value, target.value)
