"""What every status change of a ride leaves behind: a history row and a `ride:status` event.

Shared by the API (async) and the workers (sync): statements and payloads are built here and
executed by whichever session the boundary owns; the event is emitted after its commit.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, insert

from app.keys import ride_room, user_room
from app.timestamps import rfc3339
from models import RideEvent


def history_row(ride_id: uuid.UUID, before: str | None, after: str, *, actor_id: uuid.UUID | None,
                role: str, reason: str | None = None, at: datetime | None = None) -> Insert:
    return insert(RideEvent).values(
        ride_id=ride_id, from_status=before, to_status=after, actor_id=actor_id, actor_role=role,
        reason=reason, at=at or datetime.now(UTC),
    )


def status_event(ride_id: uuid.UUID, before: str | None, after: str, *, actor_id: uuid.UUID | None,
                 role: str, at: datetime | None = None) -> dict[str, Any]:
    """The `ride:status` payload of API.md."""
    moment = at or datetime.now(UTC)
    return {
        "rideId": str(ride_id),
        "status": after,
        "from": before,
        "by": {"id": str(actor_id) if actor_id else None, "role": role},
        "at": rfc3339(moment),
    }


def status_rooms(ride_id: uuid.UUID, customer_id: uuid.UUID, driver_id: uuid.UUID | None) -> list[str]:
    """`ride:{id}` and both users' rooms (a socket in several of them still gets the event once)."""
    rooms = [ride_room(ride_id), user_room(customer_id)]
    if driver_id is not None:
        rooms.append(user_room(driver_id))
    return rooms
