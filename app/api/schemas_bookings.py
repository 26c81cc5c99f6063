"""Bodies of the provider calendar and booking routes (camelCase; unknown fields refused)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Annotated, Literal

import msgspec

from app.api.schemas import Request, Response
from app.api.schemas_rides import Money, MoneyIn, RegionCode
from app.records import BookingOut
from app.services.bookings import slots
from app.services.bookings.calendar import Calendar, ScheduleRequest
from app.services.bookings.holds import HoldRequest
from app.timestamps import rfc3339

#: A local wall-clock time, `HH:MM` (24 h).
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z", examples=["09:00"])]
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with an offset")]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["Europe/Berlin"])]


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


class HoursIn(Request):
    """A weekly working period: `weekday` 0 (Monday) to 6 (Sunday), local `start`-`end`."""

    weekday: Annotated[int, msgspec.Meta(ge=0, le=6)]
    start: ClockTime
    end: ClockTime


class PeriodIn(Request):
    start: ClockTime
    end: ClockTime


class ExceptionIn(Request):
    """A local date with other hours: `periods` empty (or left out) for a day off."""

    date: date
    periods: Annotated[list[PeriodIn], msgspec.Meta(max_length=8)] = msgspec.field(default_factory=list)


class ScheduleIn(Request):
    region: RegionCode
    time_zone: TimeZone
    #: The price of one slot, in the region's currency.
    price: MoneyIn
    weekly_hours: Annotated[list[HoursIn], msgspec.Meta(max_length=50)]
    #: Unset: the region's slot length and buffer.
    slot_minutes: Annotated[int, msgspec.Meta(ge=5, le=720)] | None = None
    buffer_minutes: Annotated[int, msgspec.Meta(ge=0, le=240)] | None = None
    exceptions: Annotated[list[ExceptionIn], msgspec.Meta(max_length=400)] = msgspec.field(
        default_factory=list)

    def to_request(self) -> ScheduleRequest:
        return ScheduleRequest(
            region_code=self.region, time_zone=self.time_zone, price_amount=self.price.amount,
            price_currency=self.price.currency, slot_minutes=self.slot_minutes,
            buffer_minutes=self.buffer_minutes,
            periods=[slots.Period(h.weekday, _clock(h.start), _clock(h.end)) for h in self.weekly_hours],
            exceptions=[slots.DayException(e.date, tuple((_clock(p.start), _clock(p.end)) for p in e.periods))
                        for e in self.exceptions],
        )


class HoursOut(Response):
    weekday: int
    start: str
    end: str


class ExceptionOut(Response):
    date: date
    periods: list[PeriodIn]


class ScheduleOut(Response):
    provider_id: uuid.UUID
    region: str
    time_zone: str
    price: Money
    #: In force (the provider's own, else the region's).
    slot_minutes: int
    buffer_minutes: int
    weekly_hours: list[HoursOut]
    exceptions: list[ExceptionOut]

    @classmethod
    def of(cls, calendar: Calendar) -> ScheduleOut:
        schedule = calendar.schedule
        return cls(
            provider_id=calendar.provider_id, region=calendar.region_code, time_zone=schedule.time_zone,
            price=Money(amount=calendar.price_amount, currency=calendar.currency),
            slot_minutes=schedule.slot_minutes, buffer_minutes=schedule.buffer_minutes,
            weekly_hours=[HoursOut(weekday=p.weekday, start=f"{p.start:%H:%M}", end=f"{p.end:%H:%M}")
                          for p in schedule.periods],
            exceptions=[ExceptionOut(date=e.day, periods=[PeriodIn(start=f"{a:%H:%M}", end=f"{b:%H:%M}")
                                                          for a, b in e.periods])
                        for e in schedule.exceptions],
        )


class SlotOut(Response):
    start: str
    end: str
    #: The same instants on the provider's clock (RFC 3339 with its offset).
    local_start: str
    local_end: str


class SlotList(Response):
    provider_id: uuid.UUID
    time_zone: str
    slot_minutes: int
    buffer_minutes: int
    price: Money
    items: list[SlotOut]
    next_cursor: str | None = None

    @classmethod
    def of(cls, calendar: Calendar, free: list[slots.Slot]) -> SlotList:
        return cls(provider_id=calendar.provider_id, time_zone=calendar.schedule.time_zone,
                   slot_minutes=calendar.schedule.slot_minutes,
                   buffer_minutes=calendar.schedule.buffer_minutes,
                   price=Money(amount=calendar.price_amount, currency=calendar.currency),
                   items=[SlotOut(start=rfc3339(s.start), end=rfc3339(s.end),
                                  local_start=s.local_start.isoformat(), local_end=s.local_end.isoformat())
                          for s in free])


class BookingIn(Request):
    provider_id: uuid.UUID
    start: Instant
    end: Instant
    payment_method: Literal["card", "cash"]
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=120)] | None = None

    def to_request(self) -> HoldRequest:
        return HoldRequest(provider_id=self.provider_id, start=self.start, end=self.end,
                           payment_method=self.payment_method, service=self.service)


class BookingCancelIn(Request):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class BookingList(Response):
    items: list[BookingOut]
    next_cursor: str | None
