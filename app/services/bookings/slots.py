"""A provider's availability, pure (no I/O): weekly working periods in the provider's own zone, the
dates with other hours, and the free slots they leave once the busy ranges are taken out.

Time zones (`zoneinfo`, stdlib):
- a period's bounds are local wall-clock times, turned into UTC instants for each local date;
- a bound in a spring-forward gap (a local time that never happens) resolves as zoneinfo's
  `fold=0` does — with the offset in force before the change — normalised through UTC: in
  Europe/Berlin 02:30 on 2026-03-29 is 01:30Z, i.e. 03:30 CEST. A period left with no real time
  (both bounds mapped onto the same or inverted instants) has no slots;
- an ambiguous bound (a fall-back night's repeated hour) is its first occurrence (`fold=0`);
- slots step in real elapsed time from the period's UTC start, so each lasts exactly `slot_minutes`
  even when the clocks change inside the period, and a period counts the hours a real clock does.

Every instant in and out is timezone-aware; a naive datetime raises `ValueError`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Range = tuple[datetime, datetime]


@dataclass(frozen=True)
class Period:
    """One working period on a local weekday, e.g. Mon 09:00-17:00 (never over midnight)."""

    weekday: int  # 0 = Monday … 6 = Sunday, as `datetime.weekday()`
    start: time  # local wall-clock, naive
    end: time  # local wall-clock, naive, after `start`

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), not {self.weekday}")
        _check_hours(self.start, self.end)


@dataclass(frozen=True)
class DayException:
    """A local date with other hours than usual; no periods = a day off."""

    day: date
    periods: tuple[tuple[time, time], ...] = ()

    def __post_init__(self) -> None:
        for start, end in self.periods:
            _check_hours(start, end)
        _check_no_overlap(sorted(self.periods), f"the exception on {self.day}")


@dataclass(frozen=True)
class Schedule:
    """A provider's working hours in their own zone, the slot length and the gap after each slot."""

    time_zone: str  # IANA name, e.g. "Europe/Berlin"
    slot_minutes: int
    buffer_minutes: int
    periods: tuple[Period, ...]
    exceptions: tuple[DayException, ...] = ()

    def __post_init__(self) -> None:
        _zone(self.time_zone)
        if self.slot_minutes <= 0:
            raise ValueError(f"slot_minutes must be > 0, not {self.slot_minutes}")
        if self.buffer_minutes < 0:
            raise ValueError(f"buffer_minutes must be >= 0, not {self.buffer_minutes}")
        for weekday in range(7):
            hours = sorted((p.start, p.end) for p in self.periods if p.weekday == weekday)
            _check_no_overlap(hours, f"weekday {weekday}")
        days = [exception.day for exception in self.exceptions]
        if len(days) != len(set(days)):
            raise ValueError("at most one exception per date")


@dataclass(frozen=True)
class Slot:
    """A bookable slot: UTC instants, and the same instants on the provider's clock."""

    start: datetime  # UTC, tz-aware
    end: datetime  # UTC, tz-aware
    local_start: datetime  # tz-aware, in the provider's zone
    local_end: datetime


def working_periods(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The provider's working periods overlapping [start, end) as UTC instants (tz-aware), ordered: weekly
    periods for each local date, replaced by that date's exception when there is one."""
    _check_aware(start, end)
    zone = _zone(schedule.time_zone)
    weekly: dict[int, list[tuple[time, time]]] = {}
    for period in schedule.periods:
        weekly.setdefault(period.weekday, []).append((period.start, period.end))
    special = {exception.day: list(exception.periods) for exception in schedule.exceptions}
    # A day either side, so a zone far from UTC has its local dates covered.
    day = (start - timedelta(days=1)).astimezone(zone).date()
    last = (end + timedelta(days=1)).astimezone(zone).date()
    found: list[Range] = []
    while day <= last:
        hours = special[day] if day in special else weekly.get(day.weekday(), [])
        for local_start, local_end in hours:
            utc_start, utc_end = _instant(day, local_start, zone), _instant(day, local_end, zone)
            if utc_start < utc_end and utc_start < end and utc_end > start:
                found.append((utc_start, utc_end))
        day += timedelta(days=1)
    found.sort()
    return found


def free_slots(schedule: Schedule, busy: Iterable[tuple[datetime, datetime]], start: datetime,
               end: datetime) -> list[Slot]:
    """Free slots starting in [start, end): within each working period, slots of slot_minutes starting
    at the period's start, the next starting buffer_minutes after the previous one's end, each ending by
    the period's end; a slot is free if [slot.start, slot.end + buffer) overlaps no busy range (busy
    ranges are half-open UTC [a, b) that ALREADY include their own buffer) and its start is not before
    `start`. Ordered by start."""
    _check_aware(start, end)
    zone = _zone(schedule.time_zone)
    length = timedelta(minutes=schedule.slot_minutes)
    buffer = timedelta(minutes=schedule.buffer_minutes)
    step = length + buffer
    taken = _merged(busy)
    taken_starts = [a for a, _ in taken]
    slots: list[Slot] = []
    for period_start, period_end in working_periods(schedule, start, end):
        # Jump straight to the first slot not before `start` (no walk over the skipped ones).
        skipped = max(0, -(-(start - period_start) // step))
        slot_start = period_start + skipped * step
        while slot_start < end and slot_start + length <= period_end:
            slot_end = slot_start + length
            if not _overlaps_taken(taken, taken_starts, slot_start, slot_end + buffer):
                slots.append(Slot(slot_start, slot_end, slot_start.astimezone(zone),
                                  slot_end.astimezone(zone)))
            slot_start += step
    return slots


def blocked_range(schedule: Schedule, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """What a booking [start, end) keeps from others: [start, end + buffer)."""
    _check_aware(start, end)
    if end <= start:
        raise ValueError("a booking must end after it starts")
    return start.astimezone(UTC), (end + timedelta(minutes=schedule.buffer_minutes)).astimezone(UTC)


def within_hours(schedule: Schedule, start: datetime, end: datetime) -> bool:
    """Whether [start, end) (tz-aware instants, end > start) lies inside one working period."""
    _check_aware(start, end)
    if end <= start:
        raise ValueError("a booking must end after it starts")
    return any(period_start <= start and end <= period_end
               for period_start, period_end in working_periods(schedule, start, end))


def on_grid(schedule: Schedule, start: datetime, end: datetime) -> bool:
    """Whether [start, end) starts where one of the listed slots starts (the period's start plus a
    whole number of slot + buffer steps) and ends inside that same period."""
    _check_aware(start, end)
    if end <= start:
        raise ValueError("a booking must end after it starts")
    step = timedelta(minutes=schedule.slot_minutes + schedule.buffer_minutes)
    return any(period_start <= start and end <= period_end and (start - period_start) % step == timedelta(0)
               for period_start, period_end in working_periods(schedule, start, end))


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')"
                         ) from error


def _instant(day: date, wall: time, zone: tzinfo) -> datetime:
    """The UTC instant of `wall` on local `day`: fold=0 for a gap or a repeated hour."""
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def _check_hours(start: time, end: time) -> None:
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("a period's bounds are naive local wall-clock times")
    if end <= start:
        raise ValueError(f"a period must end after it starts, on the same day ({start}-{end})")


def _check_no_overlap(hours: list[tuple[time, time]], where: str) -> None:
    for (_, previous_end), (next_start, _) in pairwise(hours):
        if next_start < previous_end:
            raise ValueError(f"overlapping periods on {where}")


def _check_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware one")


def _merged(busy: Iterable[Range]) -> list[Range]:
    """The busy ranges, non-empty, sorted and merged where they overlap or touch."""
    ranges = list(busy)
    for a, b in ranges:
        _check_aware(a, b)
    ranges = sorted((a, b) for a, b in ranges if b > a)
    merged: list[Range] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _overlaps_taken(taken: list[Range], taken_starts: list[datetime], start: datetime,
                    end: datetime) -> bool:
    """Whether [start, end) overlaps a merged busy range (the last one starting before `end`)."""
    index = bisect_left(taken_starts, end) - 1
    return index >= 0 and taken[index][1] > start
