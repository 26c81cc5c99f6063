"""A provider's availability, without I/O: working hours on the provider's own clock, the slots they
leave free, across clock changes and far-off zones (`app/services/bookings/slots.py`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.services.bookings.slots import (
    DayException,
    Period,
    Schedule,
    Slot,
    blocked_range,
    free_slots,
    within_hours,
    working_periods,
)

BERLIN = ZoneInfo("Europe/Berlin")
EVERY_DAY = tuple(range(7))
MONDAY = date(2026, 6, 1)  # CEST, UTC+2


def schedule(hours: tuple[tuple[time, time], ...] = ((time(9), time(17)),),
             weekdays: tuple[int, ...] = EVERY_DAY, zone: str = "Europe/Berlin", slot: int = 60,
             buffer: int = 0,
             exceptions: tuple[DayException, ...] = ()) -> Schedule:
    periods = tuple(Period(day, start, end) for day in weekdays for start, end in hours)
    return Schedule(zone, slot, buffer, periods, exceptions)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def at(day: date, hour: int, minute: int = 0, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=zone)


def whole_day(day: date, zone: ZoneInfo = BERLIN) -> tuple[datetime, datetime]:
    return at(day, 0, zone=zone), at(day + timedelta(days=1), 0, zone=zone)


def starts(slots: list[Slot]) -> list[datetime]:
    return [slot.start for slot in slots]


# --- clock changes ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("day", "first", "last", "opens"), [
    (date(2026, 3, 28), utc(2026, 3, 28, 8), utc(2026, 3, 28, 15), "09:00+0100"),    # Saturday, CET
    (date(2026, 3, 29), utc(2026, 3, 29, 7), utc(2026, 3, 29, 14), "09:00+0200"),    # spring forward
    (date(2026, 10, 24), utc(2026, 10, 24, 7), utc(2026, 10, 24, 14), "09:00+0200"),  # Saturday, CEST
    (date(2026, 10, 25), utc(2026, 10, 25, 8), utc(2026, 10, 25, 15), "09:00+0100"),  # fall back
])
def test_a_berlin_day_opens_at_nine_on_the_local_clock_whatever_the_season(
        day: date, first: datetime, last: datetime, opens: str) -> None:
    # Given a provider in Berlin working 09:00-17:00 every day, in one-hour slots
    # When a customer lists that local day
    slots = free_slots(schedule(), [], *whole_day(day))

    # Then there are 8 one-hour slots, from 09:00 local (with that day's offset) to 16:00 local
    assert len(slots) == 8
    assert (slots[0].start, slots[-1].start) == (first, last)
    assert slots[0].local_start.strftime("%H:%M%z") == opens
    assert slots[-1].local_end.time() == time(17)
    assert all(slot.start.tzinfo is UTC and slot.end - slot.start == timedelta(hours=1) for slot in slots)


def test_a_period_over_the_spring_forward_gap_has_the_hours_a_real_clock_counts() -> None:
    # Given special hours 01:00-05:00 on the night Berlin's clocks jump from 02:00 to 03:00
    night = DayException(date(2026, 3, 29), ((time(1), time(5)),))
    provider = schedule(exceptions=(night,))

    # When the night is listed
    slots = free_slots(provider, [], *whole_day(date(2026, 3, 29)))

    # Then 3 real hours give 3 one-hour slots, at 01:00 CET, then 03:00 and 04:00 CEST
    assert starts(slots) == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]
    assert [slot.local_start.strftime("%H:%M%z") for slot in slots] == ["01:00+0100", "03:00+0200",
                                                                          "04:00+0200"]
    assert all(slot.end - slot.start == timedelta(hours=1) for slot in slots)
    assert slots[-1].local_end.time() == time(5)


def test_a_period_over_the_fall_back_night_has_five_real_hours() -> None:
    # Given special hours 00:00-04:00 on the night Berlin's clocks go back from 03:00 to 02:00
    night = DayException(date(2026, 10, 25), ((time(0), time(4)),))

    # When the night is listed
    slots = free_slots(schedule(exceptions=(night,)), [], *whole_day(date(2026, 10, 25)))

    # Then the period lasts 5 real hours: 5 one-hour slots, the repeated 02:00 hour listed twice
    assert working_periods(schedule(exceptions=(night,)), *whole_day(date(2026, 10, 25))) == [
        (utc(2026, 10, 24, 22), utc(2026, 10, 25, 3))]
    assert starts(slots) == [utc(2026, 10, 24, 22) + timedelta(hours=n) for n in range(5)]
    assert [slot.local_start.strftime("%H:%M%z") for slot in slots] == [
        "00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]


def test_a_period_starting_in_the_skipped_hour_starts_at_the_real_time_fold_zero_gives() -> None:
    # Given hours 02:30-06:00 on the night 02:30 never happens in Berlin
    night = DayException(date(2026, 3, 29), ((time(2, 30), time(6)),))

    # When the night's working period is read
    periods = working_periods(schedule(exceptions=(night,)), *whole_day(date(2026, 3, 29)))

    # Then 02:30 is read with the offset before the change (+01:00): 01:30Z, i.e. 03:30 CEST
    assert periods == [(utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 4))]


# --- buffers and busy ranges -----------------------------------------------------------------------

def test_the_buffer_after_each_slot_pushes_the_next_one_back() -> None:
    # Given one-hour slots with a 15-minute buffer in 09:00-12:00
    provider = schedule(hours=((time(9), time(12)),), buffer=15)

    # When the day is listed
    slots = free_slots(provider, [], *whole_day(MONDAY))

    # Then 09:00 and 10:15 are offered; 11:30 is not (it would end at 12:30)
    assert [slot.local_start.time() for slot in slots] == [time(9), time(10, 15)]


def test_a_booked_slot_is_gone_and_its_neighbours_stay() -> None:
    # Given one-hour slots 09:00-12:00 and the 10:00 slot booked
    provider = schedule(hours=((time(9), time(12)),))
    booked = blocked_range(provider, at(MONDAY, 10), at(MONDAY, 11))

    # When the day is listed
    slots = free_slots(provider, [booked], *whole_day(MONDAY))

    # Then 09:00 (ending as the booking starts) and 11:00 (starting as it ends) are still free
    assert [slot.local_start.time() for slot in slots] == [time(9), time(11)]


def test_a_busy_range_over_a_slot_s_buffer_only_still_takes_the_slot() -> None:
    # Given one-hour slots + 15-minute buffer, and something busy 10:05-10:10 (in the 09:00 slot's buffer)
    provider = schedule(hours=((time(9), time(12)),), buffer=15)
    busy = [(at(MONDAY, 10, 5), at(MONDAY, 10, 10))]

    # When the day is listed
    slots = free_slots(provider, busy, *whole_day(MONDAY))

    # Then the 09:00 slot is gone (no time to get ready for whoever is next) and 10:15 stays
    assert [slot.local_start.time() for slot in slots] == [time(10, 15)]


def test_many_busy_ranges_leave_only_the_gaps_between_them() -> None:
    # Given 15-minute slots all day and busy ranges given out of order, some overlapping
    provider = schedule(slot=15)
    busy = [(at(MONDAY, 12), at(MONDAY, 17)), (at(MONDAY, 9), at(MONDAY, 10)), (at(MONDAY, 9, 30),
                                                                                  at(MONDAY, 11, 45))]

    # When the day is listed
    slots = free_slots(provider, busy, *whole_day(MONDAY))

    # Then only 11:45 is free
    assert [slot.local_start.time() for slot in slots] == [time(11, 45)]


# --- exceptions ------------------------------------------------------------------------------------

def test_a_day_off_has_no_slots_and_the_next_day_is_as_usual() -> None:
    # Given a provider taking Monday off
    provider = schedule(exceptions=(DayException(MONDAY),))

    # When Monday and Tuesday are listed
    slots = free_slots(provider, [], at(MONDAY, 0), at(MONDAY + timedelta(days=2), 0))

    # Then only Tuesday's 8 slots are there
    assert len(slots) == 8
    assert {slot.local_start.date() for slot in slots} == {MONDAY + timedelta(days=1)}


def test_special_hours_replace_the_weekly_ones_that_day() -> None:
    # Given a provider working 13:00-15:00 this Monday instead of 09:00-17:00
    provider = schedule(exceptions=(DayException(MONDAY, ((time(13), time(15)),)),))

    # When Monday is listed
    slots = free_slots(provider, [], *whole_day(MONDAY))

    # Then only 13:00 and 14:00 are offered
    assert [slot.local_start.time() for slot in slots] == [time(13), time(14)]


# --- the window asked for --------------------------------------------------------------------------

def test_slots_already_started_are_not_offered() -> None:
    # Given one-hour slots 09:00-17:00, and the time now 10:30 local
    # When the rest of the day is listed
    slots = free_slots(schedule(), [], at(MONDAY, 10, 30), at(MONDAY, 23))

    # Then the first slot is 11:00; a slot starting exactly at `start` is offered
    assert slots[0].local_start.time() == time(11)
    assert free_slots(schedule(), [], at(MONDAY, 11), at(MONDAY, 23))[0].local_start.time() == time(11)


def test_slots_starting_at_or_after_the_end_are_not_offered() -> None:
    # When a customer lists 09:00-10:30
    slots = free_slots(schedule(), [], at(MONDAY, 9), at(MONDAY, 10, 30))

    # Then the slots starting in that window are offered (10:00 runs to 11:00), not 11:00
    assert [slot.local_start.time() for slot in slots] == [time(9), time(10)]
    assert free_slots(schedule(), [], at(MONDAY, 9), at(MONDAY, 9)) == []


def test_a_fortnight_is_listed_in_order_with_every_slot_of_every_day() -> None:
    # Given 15-minute slots in two periods a day (given in reverse), weekdays only
    provider = schedule(hours=((time(13), time(17)), (time(9), time(12))), weekdays=(0, 1, 2, 3, 4), slot=15)

    # When two weeks are listed
    slots = free_slots(provider, [], at(MONDAY, 0), at(MONDAY + timedelta(days=14), 0))

    # Then 10 working days of 28 slots each come in order
    assert len(slots) == 10 * 28
    assert starts(slots) == sorted(starts(slots))
    assert len(set(starts(slots))) == len(slots)


def test_an_auckland_provider_s_monday_is_sunday_in_utc() -> None:
    # Given a provider in Auckland (UTC+12 in June) working Mondays 09:00-12:00
    provider = schedule(hours=((time(9), time(12)),), weekdays=(0,), zone="Pacific/Auckland")

    # When the UTC Sunday before is listed
    slots = free_slots(provider, [], utc(2026, 5, 31), utc(2026, 6, 1))

    # Then Monday's local slots are there: 09:00, 10:00, 11:00 Auckland = 21:00Z-23:00Z on Sunday
    assert starts(slots) == [utc(2026, 5, 31, 21), utc(2026, 5, 31, 22), utc(2026, 5, 31, 23)]
    assert {slot.local_start.date() for slot in slots} == {MONDAY}
    assert slots[0].local_start.strftime("%H:%M%z") == "09:00+1200"


def test_a_los_angeles_provider_s_monday_evening_is_tuesday_in_utc() -> None:
    # Given a provider in Los Angeles (UTC-7 in June) working Mondays 17:00-20:00
    provider = schedule(hours=((time(17), time(20)),), weekdays=(0,), zone="America/Los_Angeles")

    # When the UTC Tuesday is listed
    slots = free_slots(provider, [], utc(2026, 6, 2), utc(2026, 6, 3))

    # Then Monday evening's slots are there, at 00:00Z-02:00Z on Tuesday
    assert starts(slots) == [utc(2026, 6, 2, 0), utc(2026, 6, 2, 1), utc(2026, 6, 2, 2)]
    assert {slot.local_start.date() for slot in slots} == {MONDAY}


# --- a booking's own checks ------------------------------------------------------------------------

TWO_PERIODS = ((time(9), time(12)), (time(13), time(17)))


@pytest.mark.parametrize(("start", "end", "inside"), [
    (at(MONDAY, 10), at(MONDAY, 11), True),                 # inside the morning
    (at(MONDAY, 9), at(MONDAY, 12), True),                  # the whole morning, bounds included
    (at(MONDAY, 16, 30), at(MONDAY, 17, 30), False),        # runs past closing
    (at(MONDAY, 8, 30), at(MONDAY, 9, 30), False),          # starts before opening
    (at(MONDAY, 11, 30), at(MONDAY, 13, 30), False),        # over the lunch break, in two periods
    (at(MONDAY, 10).astimezone(UTC), at(MONDAY, 11).astimezone(UTC), True),  # UTC instants alike
])
def test_within_hours_says_whether_a_booking_fits_one_working_period(start: datetime, end: datetime,
                                                                     inside: bool) -> None:
    assert within_hours(schedule(hours=TWO_PERIODS), start, end) is inside


def test_nothing_is_within_hours_on_a_day_off() -> None:
    provider = schedule(hours=TWO_PERIODS, exceptions=(DayException(MONDAY),))

    assert within_hours(provider, at(MONDAY, 10), at(MONDAY, 11)) is False


def test_a_booking_blocks_its_time_and_the_buffer_after_it() -> None:
    # Given a 15-minute buffer, when 10:00-11:00 Berlin is booked
    blocked = blocked_range(schedule(buffer=15), at(MONDAY, 10), at(MONDAY, 11))

    # Then others are kept out of 10:00-11:15, given in UTC
    assert blocked == (utc(2026, 6, 1, 8), utc(2026, 6, 1, 9, 15))
    assert blocked[0].tzinfo is UTC


# --- what is refused -------------------------------------------------------------------------------

NAIVE = datetime(2026, 6, 1, 10)


@pytest.mark.parametrize("call", [
    lambda: free_slots(schedule(), [], NAIVE, at(MONDAY, 17)),
    lambda: free_slots(schedule(), [(NAIVE, NAIVE + timedelta(hours=1))], *whole_day(MONDAY)),
    lambda: working_periods(schedule(), at(MONDAY, 9), NAIVE),
    lambda: within_hours(schedule(), NAIVE, NAIVE + timedelta(hours=1)),
    lambda: blocked_range(schedule(), NAIVE, NAIVE + timedelta(hours=1)),
], ids=["free_slots", "busy", "working_periods", "within_hours", "blocked_range"])
def test_a_naive_datetime_is_refused(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="naive"):
        call()


def test_an_unknown_time_zone_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        schedule(zone="Mars/Olympus")
    with pytest.raises(ValueError, match="time zone"):
        schedule(zone="")


@pytest.mark.parametrize("build", [
    lambda: Period(0, time(17), time(9)),                                    # over midnight
    lambda: Period(0, time(9), time(9)),                                     # empty
    lambda: Period(7, time(9), time(17)),                                    # no such weekday
    lambda: DayException(MONDAY, ((time(12), time(11)),)),                  # backwards
    lambda: schedule(slot=0),
    lambda: schedule(buffer=-1),
    lambda: schedule(hours=((time(9), time(12)), (time(11), time(14)))),  # overlapping
], ids=["over-midnight", "empty", "weekday", "exception-backwards", "slot", "buffer", "overlap"])
def test_hours_that_make_no_sense_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()
