"""`bookings.remind(booking, offset)`: due `offset` seconds before the start (written when the
booking is confirmed, one due row per offset). It writes the customer's reminder only if the
booking is still CONFIRMED and has not started; the notification's dedupe key makes a redelivered
or replayed job write nothing more."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.logging import get_logger
from app.services.bookings import notices
from app.settings import Settings
from models import Booking, BookingStatus

log = get_logger("bookings")


def remind(session: Session, settings: Settings, booking_id: uuid.UUID, offset_s: int, *,
           now: datetime) -> bool:
    """Write the reminder (once); False when the booking is no longer one to remind of."""
    booking = session.scalar(select(Booking).where(Booking.id == booking_id))
    if booking is None or booking.status != BookingStatus.CONFIRMED.value or now >= booking.starts_at:
        log.info("bookings.reminder_skipped", booking_id=str(booking_id), offset_s=offset_s,
                 status=booking and booking.status)
        return False
    written = notices.reminder(session, booking, offset_s, settings.twilio)
    log.info("bookings.reminded", booking_id=str(booking_id), offset_s=offset_s, written=written)
    return written
