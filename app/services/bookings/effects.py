"""What a booking use case leaves for after its commit: the socket events to emit.

The booking services are plain (sync) functions shared by the web (through
`AsyncSession.run_sync`) and the jobs; each collects its events on an `Effects`, and its boundary
emits them once the transaction committed (`emit_after_commit`), never before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.services.bookings.moves import BookingMoved

Event = tuple[str, dict[str, Any], "str | list[str]"]


@dataclass
class Effects:
    events: list[Event] = field(default_factory=list)

    def emit(self, event: str, payload: dict[str, Any], rooms: str | list[str]) -> None:
        self.events.append((event, payload, rooms))

    def emit_after_commit(self, after_commit: Callable[[Callable[[], Any]], None],
                          emit: Callable[[str, dict[str, Any], str | list[str]], Any]) -> None:
        """Hand every collected event to `emit`, after the caller's commit."""
        for event, payload, rooms in self.events:
            after_commit(lambda e=event, p=payload, r=rooms: emit(e, p, r))  # type: ignore[misc]


def record(session: Session, effects: Effects, moved: BookingMoved) -> None:
    """Persist a move's history row and collect its events (`booking:status` to both parties and,
    when the provider's time is taken or given back, `slots:changed` to its calendar's viewers)."""
    session.execute(moved.history_row)
    record_events(effects, moved)


def record_events(effects: Effects, moved: BookingMoved) -> None:
    """A move's events, its history row written by the caller."""
    effects.emit("booking:status", moved.event, moved.rooms)
    if moved.frees_or_takes_time:
        payload, room = moved.slots_event
        effects.emit("slots:changed", payload, room)
