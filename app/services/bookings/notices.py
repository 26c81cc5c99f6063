"""What the parties of a booking are told on WhatsApp or SMS (the ride flow's templates, outbox and
console channel), each message once by its dedupe key: the confirmation (to both), the reminders
before the start, and the cancellation notices."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from app.services.notifications import notify
from app.settings import TwilioSettings
from models import Booking
from models.booking_states import ADMIN, CUSTOMER, PROVIDER


def when_text(start: datetime, time_zone: str) -> str:
    """The start as the provider's clock shows it: `Sat 06 Dec 09:00 CET`."""
    local = start.astimezone(ZoneInfo(time_zone))
    return f"{local:%a %d %b %H:%M %Z}"


def lead_text(seconds: int) -> str:
    """`24 hours`, `1 hour`, `30 minutes`."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'' if hours == 1 else 's'}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def _params(booking: Booking, **extra: Any) -> dict[str, Any]:
    return {"bookingId": str(booking.id), "when": when_text(booking.starts_at, booking.time_zone),
            "service": booking.service or "", **extra}


def key(booking: Booking, *parts: object) -> str:
    return ":".join((f"booking:{booking.id}", *(str(p) for p in parts)))


def confirmed(session: Session, booking: Booking, settings: TwilioSettings | None) -> None:
    """The customer's confirmation, and the provider's new booking."""
    notify(session, user_id=booking.customer_id, template="slot_confirmed", settings=settings,
           dedupe_key=key(booking, "slot_confirmed"), params=_params(booking))
    notify(session, user_id=booking.provider_id, template="slot_booked", settings=settings,
           dedupe_key=key(booking, "slot_booked"), params=_params(booking))


def reminder(session: Session, booking: Booking, offset_s: int, settings: TwilioSettings | None) -> bool:
    """The customer's reminder `offset_s` before the start (once per offset); True if written now."""
    return notify(session, user_id=booking.customer_id, template="booking_reminder", settings=settings,
                  dedupe_key=key(booking, "reminder", offset_s),
                  params=_params(booking, lead=lead_text(offset_s)))


def ended(session: Session, booking: Booking, *, by_role: str, fee: int, reason: str | None,
          was_confirmed: bool, settings: TwilioSettings | None) -> None:
    """A cancellation: the other party is told (an admin's: both; the provider only of a booking it
    was told of, a confirmed one). A fee (a late cancellation, a no-show) is told to the customer."""
    by = {CUSTOMER: "the customer", PROVIDER: "the provider", ADMIN: "support"}.get(by_role, "the system")
    recipients = {CUSTOMER: [PROVIDER], PROVIDER: [CUSTOMER]}.get(by_role, [CUSTOMER, PROVIDER])
    if not was_confirmed and PROVIDER in recipients:
        recipients.remove(PROVIDER)
    if fee and CUSTOMER not in recipients:
        recipients.append(CUSTOMER)
    for party in recipients:
        user_id = booking.customer_id if party == CUSTOMER else booking.provider_id
        fee_params = {"feeAmount": fee, "currency": booking.currency} if party == CUSTOMER and fee else {}
        notify(session, user_id=user_id, template="booking_cancelled", settings=settings,
               dedupe_key=key(booking, "cancelled", party),
               params=_params(booking, by=by, reason=reason or "", **fee_params))
