"""Time-slot bookings: a provider's week, its exceptions, and the bookings of its time.

A booking is a customer's claim on a provider's time `[starts_at, ends_at)`. While it is live
(`HELD` or `CONFIRMED`) it keeps `blocked` = `[starts_at, ends_at + buffer)` from every other live
booking of the provider: PostgreSQL's exclusion constraint `ex_bookings_no_overlap` refuses an
overlapping insert, whatever the timing of the requests (no read-then-write check).
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    SmallInteger,
    String,
    Time,
    text,
)
from sqlalchemy.dialects.postgresql import TSTZRANGE, ExcludeConstraint, Range
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, utcnow, uuid_pk


class BookingStatus(enum.StrEnum):
    #: The slot is kept for the customer until `hold_expires_at` while it pays.
    HELD = "HELD"
    CONFIRMED = "CONFIRMED"
    #: The hold lapsed unconfirmed: the slot and the card hold were released.
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    #: The customer did not come: the no-show fee was taken.
    NO_SHOW = "NO_SHOW"


#: The statuses that keep the provider's time (the exclusion constraint's predicate).
LIVE_BOOKING_STATUSES = (BookingStatus.HELD, BookingStatus.CONFIRMED)
_LIVE_SQL = "status IN ('HELD', 'CONFIRMED')"


class ProviderSchedule(Base):
    """A provider's calendar settings: its time zone, its price, and slot length and buffer (the
    region's when not set)."""

    __tablename__ = "provider_schedules"

    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                   primary_key=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    time_zone: Mapped[str] = mapped_column(String(64))
    slot_minutes: Mapped[int | None] = mapped_column(SmallInteger)
    buffer_minutes: Mapped[int | None] = mapped_column(SmallInteger)
    #: What one slot costs, in the region's currency (minor units).
    price_amount: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint("slot_minutes IS NULL OR slot_minutes BETWEEN 5 AND 720", name="slot_range"),
        CheckConstraint("buffer_minutes IS NULL OR buffer_minutes BETWEEN 0 AND 240", name="buffer_range"),
        CheckConstraint("price_amount > 0", name="price_positive"),
    )


class ProviderHours(Base):
    """One weekly working period of a provider, in its local time (`weekday` 0 = Monday)."""

    __tablename__ = "provider_hours"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_schedules.provider_id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int] = mapped_column(SmallInteger)
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)

    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint("end_time > start_time", name="period_order"),
    )


class ProviderException(Base):
    """A local date with other hours than the week's: a day off (no times) or special hours."""

    __tablename__ = "provider_exceptions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_schedules.provider_id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    start_time: Mapped[time | None] = mapped_column(Time)
    end_time: Mapped[time | None] = mapped_column(Time)

    __table_args__ = (
        Index("ix_provider_exceptions_provider_day", "provider_id", "day"),
        CheckConstraint("(start_time IS NULL) = (end_time IS NULL)", name="both_or_neither"),
        CheckConstraint("end_time IS NULL OR end_time > start_time", name="period_order"),
    )


class Booking(Base):
    __tablename__ = "bookings"

    id: Mapped[uuid.UUID] = uuid_pk()
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    service: Mapped[str | None] = mapped_column(String(120))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    #: `[starts_at, ends_at + the provider's buffer)`: what no other live booking may overlap.
    blocked: Mapped[Range[datetime]] = mapped_column(TSTZRANGE)
    time_zone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    payment_method: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    hold_expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        ExcludeConstraint(
            ("provider_id", "="), ("blocked", "&&"), name="ex_bookings_no_overlap", using="gist",
            where=text(_LIVE_SQL),
        ),
        CheckConstraint("ends_at > starts_at", name="range_order"),
        CheckConstraint("status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'CANCELLED', 'COMPLETED', 'NO_SHOW')",
                        name="status_known"),
        CheckConstraint("payment_method IN ('card', 'cash')", name="method_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_bookings_customer_created", "customer_id", text("created_at DESC")),
        Index("ix_bookings_provider_starts", "provider_id", "starts_at"),
        Index("ix_bookings_created", text("created_at DESC")),
        Index("ix_bookings_held_expiry", "hold_expires_at", postgresql_where=text("status = 'HELD'")),
    )


class BookingEvent(Base):
    """One status change of a booking: who made it, when, from and to (the first is the hold)."""

    __tablename__ = "booking_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    booking_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("bookings.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    actor_role: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = created_at()

    __table_args__ = (Index("ix_booking_history_booking", "booking_id", "id"),)

