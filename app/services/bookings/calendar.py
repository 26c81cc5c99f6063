"""A provider's calendar in the database: its schedule (published by the provider) and its free
slots (the week's hours and exceptions, minus what live bookings keep)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import Range, insert
from sqlalchemy.orm import Session

from app import currencies
from app.errors import NotFound, ValidationFailed
from app.keys import calendar_room
from app.services.bids import check_price
from app.services.bookings import slots
from app.services.bookings.effects import Effects
from app.timestamps import rfc3339
from models import (
    Booking,
    BookingStatus,
    ProviderException,
    ProviderHours,
    ProviderSchedule,
    Region,
)


@dataclass(frozen=True)
class Calendar:
    """A provider's schedule as the slots are computed from it, with its price and market."""

    provider_id: uuid.UUID
    region_code: str
    currency: str
    commission_rate: Decimal
    price_amount: int
    schedule: slots.Schedule
    #: Whether slot length and buffer are the provider's own (else the region's).
    own_slot_minutes: int | None
    own_buffer_minutes: int | None


@dataclass(frozen=True)
class ScheduleRequest:
    """What a provider publishes: its zone, market, price, week and exceptions."""

    region_code: str
    time_zone: str
    price_amount: int
    price_currency: str
    slot_minutes: int | None
    buffer_minutes: int | None
    periods: Sequence[slots.Period]
    exceptions: Sequence[slots.DayException]


#: A provider's schedule, its region, its week and its exceptions, in one round trip.
_CALENDAR = text("""
SELECT s.time_zone, s.slot_minutes, s.buffer_minutes, s.price_amount, r.code, r.currency, r.commission_rate,
       r.slot_minutes AS region_slot_minutes, r.slot_buffer_minutes AS region_buffer_minutes,
       (SELECT coalesce(json_agg(json_build_array(h.weekday, h.start_time, h.end_time)
                                 ORDER BY h.weekday, h.start_time), '[]')
        FROM provider_hours h WHERE h.provider_id = s.provider_id) AS hours,
       (SELECT coalesce(json_agg(json_build_array(e.day, e.start_time, e.end_time)
                                 ORDER BY e.day, e.start_time), '[]')
        FROM provider_exceptions e WHERE e.provider_id = s.provider_id) AS days
FROM provider_schedules s JOIN regions r ON r.code = s.region_code
WHERE s.provider_id = :provider_id
""")


def load_calendar(session: Session, provider_id: uuid.UUID) -> Calendar:
    """The provider's calendar (`NotFound` if it takes no bookings)."""
    row = session.execute(_CALENDAR, {"provider_id": provider_id}).first()
    if row is None:
        raise NotFound("This provider takes no bookings.")
    schedule = slots.Schedule(
        time_zone=row.time_zone,
        slot_minutes=row.slot_minutes or row.region_slot_minutes,
        buffer_minutes=row.buffer_minutes if row.buffer_minutes is not None else row.region_buffer_minutes,
        periods=tuple(slots.Period(day, time.fromisoformat(a), time.fromisoformat(b))
                      for day, a, b in row.hours),
        exceptions=_exceptions(row.days),
    )
    return Calendar(provider_id=provider_id, region_code=row.code, currency=row.currency,
                    commission_rate=Decimal(row.commission_rate), price_amount=row.price_amount,
                    schedule=schedule, own_slot_minutes=row.slot_minutes,
                    own_buffer_minutes=row.buffer_minutes)


def _exceptions(rows: list[list[str | None]]) -> tuple[slots.DayException, ...]:
    by_day: dict[date, list[tuple[time, time]]] = {}
    for day, start, end in rows:
        assert day is not None
        periods = by_day.setdefault(date.fromisoformat(day), [])
        if start is not None and end is not None:
            periods.append((time.fromisoformat(start), time.fromisoformat(end)))
    return tuple(slots.DayException(day, tuple(periods)) for day, periods in by_day.items())


def busy_ranges(session: Session, provider_id: uuid.UUID, start: datetime, end: datetime,
                now: datetime) -> list[tuple[datetime, datetime]]:
    """What the provider's live bookings keep in `[start, end)` (their `blocked` ranges); a hold past
    its expiry keeps nothing, even before the job has released it."""
    window = Range(start, end, bounds="[)")
    rows = session.execute(
        select(func.lower(Booking.blocked), func.upper(Booking.blocked))
        .where(Booking.provider_id == provider_id, Booking.blocked.overlaps(window),
               (Booking.status == BookingStatus.CONFIRMED.value)
               | ((Booking.status == BookingStatus.HELD.value) & (Booking.hold_expires_at > now)))
    ).all()
    return [(row[0], row[1]) for row in rows]


def free_slots(session: Session, provider_id: uuid.UUID, start: datetime, end: datetime,
               now: datetime, *, horizon: timedelta) -> tuple[Calendar, list[slots.Slot]]:
    """The provider's calendar and its free slots starting in `[max(start, now), end)`, no further
    ahead than `horizon` (what may be booked)."""
    start, end = max(start, now), min(end, now + horizon)
    calendar = load_calendar(session, provider_id)
    if end <= start:
        return calendar, []
    busy = busy_ranges(session, provider_id, start, end + _longest(calendar), now)
    return calendar, slots.free_slots(calendar.schedule, busy, max(start, now), end)


def _longest(calendar: Calendar) -> timedelta:
    return timedelta(minutes=calendar.schedule.slot_minutes + calendar.schedule.buffer_minutes)


def publish(session: Session, provider_id: uuid.UUID, request: ScheduleRequest, *,
            effects: Effects) -> Calendar:
    """Replace the provider's schedule (bookings already made are kept as they are); its calendar's
    viewers get `slots:changed` (no range: the whole calendar may have changed)."""
    try:
        slots.Schedule(request.time_zone, request.slot_minutes or 60, request.buffer_minutes or 0,
                       tuple(request.periods), tuple(request.exceptions))
    except ValueError as exc:
        raise ValidationFailed(str(exc), details={"schedule": str(exc)}) from exc
    region = session.get(Region, request.region_code)
    if region is None:
        raise ValidationFailed("Unknown region.", details={"region": request.region_code})
    if region.currency != request.price_currency:
        raise ValidationFailed(f"Prices in {region.code} are in {region.currency}.",
                               details={"price.currency": f"must be {region.currency}"})
    money = currencies.of(region.currency)
    check_price(money, request.price_amount, card=money.card)  # what a card could be charged, where it can
    values = {"region_code": request.region_code, "time_zone": request.time_zone,
              "price_amount": request.price_amount, "slot_minutes": request.slot_minutes,
              "buffer_minutes": request.buffer_minutes, "updated_at": func.now()}
    session.execute(insert(ProviderSchedule).values(provider_id=provider_id, **values)
                    .on_conflict_do_update(index_elements=["provider_id"], set_=values))
    session.execute(delete(ProviderHours).where(ProviderHours.provider_id == provider_id))
    session.execute(delete(ProviderException).where(ProviderException.provider_id == provider_id))
    for period in request.periods:
        session.add(ProviderHours(provider_id=provider_id, weekday=period.weekday, start_time=period.start,
                                  end_time=period.end))
    for day in request.exceptions:
        if not day.periods:
            session.add(ProviderException(provider_id=provider_id, day=day.day))
        for start, end in day.periods:
            session.add(ProviderException(provider_id=provider_id, day=day.day, start_time=start,
                                          end_time=end))
    session.flush()
    effects.emit("slots:changed", {"providerId": str(provider_id), "start": None, "end": None, "free": None,
                                   "at": rfc3339(datetime.now(UTC))}, calendar_room(provider_id))
    return load_calendar(session, provider_id)
