"""A booking's status move, decided without I/O: `move()` checks the state machine and says what
happened — the history row to add, the `booking:status` event and its rooms (both parties), and,
when the provider's time is taken or given back, the `slots:changed` event for its calendar."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, insert

from app.keys import calendar_room, user_room
from app.services.ride_moves import Mover
from app.timestamps import rfc3339
from models import LIVE_BOOKING_STATUSES, Booking, BookingEvent, BookingStatus
from models.booking_states import check_move


@dataclass(frozen=True, slots=True)
class BookingState:
    """What a move needs of a booking: where it stands, whose it is, and which time it keeps."""

    id: uuid.UUID
    status: BookingStatus
    customer_id: uuid.UUID
    provider_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime

    @classmethod
    def of(cls, booking: Booking) -> BookingState:
        return cls(booking.id, BookingStatus(booking.status), booking.customer_id, booking.provider_id,
                   booking.starts_at, booking.ends_at)


@dataclass(frozen=True, slots=True)
class BookingMoved:
    """One move that happened (`before` None: the booking was just made, as `HELD`)."""

    booking: BookingState
    before: BookingStatus | None
    by: Mover
    reason: str | None
    at: datetime

    @property
    def after(self) -> BookingStatus:
        return self.booking.status

    @property
    def history_row(self) -> Insert:
        return insert(BookingEvent).values(
            booking_id=self.booking.id, from_status=self.before.value if self.before else None,
            to_status=self.after.value, actor_id=self.by.id, actor_role=self.by.role, reason=self.reason,
            at=self.at,
        )

    @property
    def event(self) -> dict[str, Any]:
        """The `booking:status` payload."""
        return {
            "bookingId": str(self.booking.id), "status": self.after.value,
            "from": self.before.value if self.before else None,
            "by": {"id": str(self.by.id) if self.by.id else None, "role": self.by.role},
            "providerId": str(self.booking.provider_id), "start": rfc3339(self.booking.starts_at),
            "end": rfc3339(self.booking.ends_at), "at": rfc3339(self.at),
        }

    @property
    def rooms(self) -> list[str]:
        return [user_room(self.booking.customer_id), user_room(self.booking.provider_id)]

    @property
    def frees_or_takes_time(self) -> bool:
        """Whether the provider's free slots change: a hold made, or a live booking ended."""
        live_before = self.before in LIVE_BOOKING_STATUSES
        return live_before != (self.after in LIVE_BOOKING_STATUSES)

    @property
    def slots_event(self) -> tuple[dict[str, Any], str]:
        """`slots:changed` and the provider's calendar room."""
        return ({"providerId": str(self.booking.provider_id), "start": rfc3339(self.booking.starts_at),
                 "end": rfc3339(self.booking.ends_at),
                 "free": self.after not in LIVE_BOOKING_STATUSES, "at": rfc3339(self.at)},
                calendar_room(self.booking.provider_id))


def made(booking: BookingState, *, by: Mover, at: datetime) -> BookingMoved:
    """The hold itself: the first history entry (`from` null, `to` HELD)."""
    return BookingMoved(booking=booking, before=None, by=by, reason=None, at=at)


def move(booking: BookingState, target: BookingStatus, *, by: Mover, at: datetime,
         reason: str | None = None) -> BookingMoved:
    """Move `booking` to `target` as `by` (`InvalidTransition` unless `models.booking_states` allows)."""
    check_move(booking.status, target, by.role)
    return BookingMoved(booking=dataclasses.replace(booking, status=target), before=booking.status, by=by,
                        reason=reason, at=at)
