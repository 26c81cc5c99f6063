"""Reading bookings: one (with its payment and history) as its parties and admins see it, and
lists, newest first, with a cursor (a customer's own, a provider's own, an admin's filtered)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from app.cursors import Position, decode_cursor, encode_cursor
from app.services.bookings.lifecycle import Caller, load_booking, party_of
from models import Booking, BookingEvent, Payment
from models.booking_states import ADMIN, CUSTOMER


@dataclass(frozen=True)
class BookingView:
    booking: Booking
    payment_status: str | None
    #: Shown to the booking's customer only (it confirms the card with it).
    client_secret: str | None
    history: list[BookingEvent] = field(default_factory=list)


@dataclass(frozen=True)
class BookingFilter:
    """An admin's filters (all optional)."""

    status: str | None = None
    provider_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None


def get_booking(session: Session, caller: Caller, booking_id: uuid.UUID) -> BookingView:
    """One booking as the caller may see it (`NotFound` for another's)."""
    booking = load_booking(session, booking_id, caller)
    return views_of(session, caller, [booking])[0]


def views_of(session: Session, caller: Caller, bookings: Sequence[Booking]) -> list[BookingView]:
    ids = [b.id for b in bookings]
    payments = {row[0]: (row[1], row[2]) for row in session.execute(
        select(Payment.booking_id, Payment.status, Payment.client_secret).where(Payment.booking_id.in_(ids)))}
    history: dict[uuid.UUID, list[BookingEvent]] = defaultdict(list)
    for event in session.scalars(select(BookingEvent).where(BookingEvent.booking_id.in_(ids))
                                 .order_by(BookingEvent.booking_id, BookingEvent.id)):
        history[event.booking_id].append(event)
    views = []
    for booking in bookings:
        status, secret = payments.get(booking.id, (None, None))
        mine = party_of(caller, booking) == CUSTOMER
        views.append(BookingView(booking, status, secret if mine else None, history[booking.id]))
    return views


def list_bookings(session: Session, caller: Caller, *, cursor: str | None, limit: int,
                  filters: BookingFilter | None = None) -> tuple[list[BookingView], str | None]:
    """The caller's bookings (an admin's: all, filtered), newest first; the next page's cursor."""
    query: Select[Booking] = select(Booking)
    if caller.role == ADMIN:
        query = _filtered(query, filters or BookingFilter())
    elif caller.role == CUSTOMER:
        query = query.where(Booking.customer_id == caller.id)
    else:
        query = query.where(Booking.provider_id == caller.id)
    if cursor:
        after = decode_cursor(cursor, Position)
        query = query.where(tuple_(Booking.created_at, Booking.id) < tuple_(after.at, after.id))
    newest_first = query.order_by(Booking.created_at.desc(), Booking.id.desc()).limit(limit + 1)
    rows = list(session.scalars(newest_first))
    more, page = len(rows) > limit, rows[:limit]
    next_cursor = encode_cursor(Position(page[-1].created_at, page[-1].id)) if more and page else None
    return views_of(session, caller, page), next_cursor


def _filtered(query: Select[Booking], filters: BookingFilter) -> Select[Booking]:
    if filters.status:
        query = query.where(Booking.status == filters.status)
    if filters.provider_id:
        query = query.where(Booking.provider_id == filters.provider_id)
    if filters.customer_id:
        query = query.where(Booking.customer_id == filters.customer_id)
    if filters.starts_from:
        query = query.where(Booking.starts_at >= filters.starts_from)
    if filters.starts_before:
        query = query.where(Booking.starts_at < filters.starts_before)
    return query
