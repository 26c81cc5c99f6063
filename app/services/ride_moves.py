"""A ride's status move, decided without I/O: `move()` checks the state machine and says what happened.

`move(ride, target, by=..., at=...)` checks the transition table (`models.ride_states`; an
illegal move raises `InvalidTransition`, 409) and returns a `RideMoved`: the ride as the move
leaves it, where it came from, who moved it, why and when, and what every move leaves behind — the
history row to add and the `ride:status` event with its rooms.

The callers persist and emit it in their own way: the API's async unit of work
(`app.services.rides.move_ride`, a conditional UPDATE of a locked ride) and the workers' sync
session (`app.services.ride_expiry.move_by_system`, a compare-and-set). Then each use case reacts
to the move it got back (payments, notifications, the driver freed), in the same transaction; the
event is emitted after the commit.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, insert

from app.keys import ride_room, user_room
from app.timestamps import rfc3339
from models import Ride, RideEvent, RideStatus
from models.ride_states import SYSTEM, check_move


@dataclass(frozen=True, slots=True)
class RideState:
    """What a move needs of a ride: where it stands and whose it is."""

    id: uuid.UUID
    status: RideStatus
    customer_id: uuid.UUID
    driver_id: uuid.UUID | None = None

    @classmethod
    def of(cls, ride: Ride) -> RideState:
        return cls(ride.id, ride.status, ride.customer_id, ride.driver_id)


@dataclass(frozen=True, slots=True)
class Mover:
    """Who makes a move (`history[].by`): a role and, but for the system, the user's id."""

    role: str
    id: uuid.UUID | None = None


#: The farm itself: it ends a ride nobody bid on and cancels one that waited too long.
BY_SYSTEM = Mover(SYSTEM)


@dataclass(frozen=True, slots=True)
class RideMoved:
    """One move that happened: the ride as it left it, and what the move leaves behind."""

    ride: RideState
    before: RideStatus
    by: Mover
    reason: str | None
    at: datetime

    @property
    def ride_id(self) -> uuid.UUID:
        return self.ride.id

    @property
    def after(self) -> RideStatus:
        return self.ride.status

    @property
    def history_row(self) -> Insert:
        """The row of the ride's history (`history[]`: from, to, by, at, reason)."""
        return insert(RideEvent).values(
            ride_id=self.ride.id, from_status=self.before.value, to_status=self.after.value,
            actor_id=self.by.id, actor_role=self.by.role, reason=self.reason, at=self.at,
        )

    @property
    def event(self) -> dict[str, Any]:
        """The `ride:status` payload of API.md."""
        return {
            "rideId": str(self.ride.id),
            "status": self.after.value,
            "from": self.before.value,
            "by": {"id": str(self.by.id) if self.by.id else None, "role": self.by.role},
            "at": rfc3339(self.at),
        }

    @property
    def rooms(self) -> tuple[str, ...]:
        """`ride:{id}` and both users' rooms (a socket in several of them still gets it once)."""
        rooms = (ride_room(self.ride.id), user_room(self.ride.customer_id))
        return rooms if self.ride.driver_id is None else (*rooms, user_room(self.ride.driver_id))


def move(ride: RideState, target: RideStatus, *, by: Mover, at: datetime,
         reason: str | None = None) -> RideMoved:
    """Move `ride` to `target` as `by` at `at` (`InvalidTransition` unless the table allows it).

    The driver the move assigns (a bid's accept) is already the state's `driver_id`: the event
    goes to that driver's room too.
    """
    check_move(ride.status, target, by.role)
    return RideMoved(ride=dataclasses.replace(ride, status=target), before=ride.status, by=by,
                     reason=reason, at=at)
