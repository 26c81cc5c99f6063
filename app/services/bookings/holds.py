"""`POST /bookings`: hold a provider's time for the customer while it pays.

The hold is one transaction: holds of the same time that lapsed are released first (a hold past
its `holdExpiresAt` keeps nothing, even before its expiry job ran), then the booking is inserted.
**PostgreSQL decides who gets the time**: the exclusion constraint `ex_bookings_no_overlap` refuses
a booking whose `blocked` range overlaps a live one of the provider, so of any number of
concurrent holds of overlapping times exactly one commits and the others answer 409 `CONFLICT`
(reason `SLOT_TAKEN`) — there is no read-then-write check to race.

The same transaction writes the first history row, the payment (the provider is paid like a
ride's driver: a destination charge, the region's commission), the hold's expiry as a due job
(`bookings.expire_hold` at `holdExpiresAt`) and, for a card, `bookings.settle`, which creates the
PaymentIntent (manual capture) at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import currencies
from app.errors import Conflict, PaymentsDisabled, ValidationFailed
from app.keys import BOOKINGS_EXPIRE_HOLD, BOOKINGS_SETTLE
from app.outbox import INSERT_JOB, add_job
from app.services.bookings import slots
from app.services.bookings.calendar import Calendar, load_calendar
from app.services.bookings.effects import Effects, record, record_events
from app.services.bookings.moves import BookingState, made, move
from app.services.bookings.views import BookingView
from app.services.payments.policy import commission
from app.services.ride_moves import BY_SYSTEM, Mover
from app.settings import Settings
from models import Booking, BookingEvent, BookingStatus, Driver, PaymentStatus
from models.booking_states import CUSTOMER

#: The reason a lapsed hold's history gives.
HOLD_LAPSED: str = "the hold expired before the booking was confirmed"
#: The SQLSTATE of an exclusion constraint's refusal.
EXCLUSION_VIOLATION = "23P01"


@dataclass(frozen=True)
class HoldRequest:
    provider_id: uuid.UUID
    start: datetime
    end: datetime
    payment_method: str
    service: str | None = None


#: The hold in one statement: the booking (the exclusion constraint decides here), its first
#: history row, its payment, its expiry (a due job at `holdExpiresAt`) and, for a card, its settle.
_HOLD = text(f"""
WITH booking AS (
    INSERT INTO bookings (id, customer_id, provider_id, region_code, service, starts_at, ends_at, blocked,
                          time_zone, status, payment_method, amount, currency, hold_expires_at, created_at,
                          updated_at)
    VALUES (:id, :customer_id, :provider_id, :region_code, :service, :starts_at, :ends_at,
            tstzrange(:blocked_start, :blocked_end, '[)'), :time_zone, 'HELD', :method, :amount, :currency,
            :expires, :now, :now)
    RETURNING id
), history AS (
    INSERT INTO booking_history (booking_id, from_status, to_status, actor_id, actor_role, at)
    SELECT id, NULL, 'HELD', :customer_id, '{CUSTOMER}', :now FROM booking
), payment AS (
    INSERT INTO payments (id, booking_id, customer_id, driver_id, method, status, amount, currency,
                          commission_rate, application_fee, stripe_account_id, created_at, updated_at)
    SELECT :payment_id, id, :customer_id, :provider_id, :method, 'pending', :amount, :currency, :rate, :fee,
           :account, :now, :now FROM booking
), expiry AS (
    {INSERT_JOB}
    SELECT gen_random_uuid(), {BOOKINGS_EXPIRE_HOLD.sql}, jsonb_build_array(CAST(id AS text)), '{{}}'::jsonb,
           '{{}}'::jsonb, :now, :expires FROM booking
), settle AS (
    {INSERT_JOB}
    SELECT gen_random_uuid(), {BOOKINGS_SETTLE.sql}, jsonb_build_array(CAST(id AS text)), '{{}}'::jsonb,
           '{{}}'::jsonb, :now, :now FROM booking WHERE :method = 'card'
)
SELECT id FROM booking
""")


def hold(session: Session, settings: Settings, customer_id: uuid.UUID, request: HoldRequest, *,
         now: datetime, effects: Effects) -> BookingView:
    """Hold the time for the customer (`Conflict` if it is taken); the booking as it was written."""
    calendar = load_calendar(session, request.provider_id)
    slot_count = _check_request(calendar, settings, request, now)
    account = _payee_account(session, settings, request, calendar)
    blocked = slots.blocked_range(calendar.schedule, request.start, request.end)
    # The customer's advisory lock first, then the lapsed holds' rows (every hold takes them in this order).
    _check_hold_cap(session, settings.bookings.holds_per_customer, customer_id, now)
    release_lapsed(session, request.provider_id, blocked, now=now, effects=effects)
    amount = calendar.price_amount * slot_count
    booking = Booking(
        id=uuid.uuid4(), customer_id=customer_id, provider_id=request.provider_id,
        region_code=calendar.region_code, service=request.service, starts_at=request.start,
        ends_at=request.end,
        time_zone=calendar.schedule.time_zone, status=BookingStatus.HELD.value,
        payment_method=request.payment_method, amount=amount, currency=calendar.currency,
        hold_expires_at=now + timedelta(seconds=settings.bookings.hold_ttl_s), created_at=now, updated_at=now,
    )
    try:
        session.execute(_HOLD, {
            "id": booking.id, "customer_id": customer_id, "provider_id": request.provider_id,
            "region_code": calendar.region_code, "service": request.service, "starts_at": request.start,
            "ends_at": request.end, "blocked_start": blocked[0], "blocked_end": blocked[1],
            "time_zone": booking.time_zone, "method": request.payment_method, "amount": amount,
            "currency": calendar.currency, "expires": booking.hold_expires_at, "now": now,
            "payment_id": uuid.uuid4(), "rate": calendar.commission_rate,
            "fee": commission(amount, calendar.commission_rate, calendar.currency), "account": account,
        })
    except IntegrityError as exc:  # the transaction is over: the caller's unit of work rolls it back
        if getattr(exc.orig, "sqlstate", None) != EXCLUSION_VIOLATION:
            raise
        raise Conflict("This time is no longer free; pick another slot.",
                       details={"reason": "SLOT_TAKEN", "providerId": str(request.provider_id)}) from exc
    moved = made(BookingState.of(booking), by=Mover(CUSTOMER, customer_id), at=now)
    record_events(effects, moved)
    first = BookingEvent(from_status=None, to_status=BookingStatus.HELD.value, actor_id=customer_id,
                         actor_role=CUSTOMER, reason=None, at=now)
    return BookingView(booking, PaymentStatus.PENDING.value, None, [first])


def _check_request(calendar: Calendar, settings: Settings, request: HoldRequest, now: datetime) -> int:
    """The number of slots the request spans, once it is a bookable time (else 400 / 409)."""
    length = request.end - request.start
    slot = timedelta(minutes=calendar.schedule.slot_minutes)
    if length <= timedelta(0) or length % slot:
        raise ValidationFailed(
            f"A booking lasts a whole number of this provider's slots "
            f"({calendar.schedule.slot_minutes} minutes each).",
            details={"end": "must be start plus a whole number of slots",
                     "slotMinutes": calendar.schedule.slot_minutes})
    if request.start <= now:
        raise ValidationFailed("A booking starts in the future.", details={"start": "must be in the future"})
    if request.start > now + timedelta(days=settings.bookings.horizon_days):
        raise ValidationFailed(f"Bookings open {settings.bookings.horizon_days} days ahead.",
                               details={"start": f"must be within {settings.bookings.horizon_days} days"})
    if not slots.within_hours(calendar.schedule, request.start, request.end):
        raise Conflict("The provider does not work at that time; pick one of its free slots.",
                       details={"reason": "OUTSIDE_WORKING_HOURS"})
    if not slots.on_grid(calendar.schedule, request.start, request.end):
        raise ValidationFailed("A booking starts where one of the provider's slots starts "
                               "(GET /providers/{id}/slots lists them).",
                               details={"start": "must be the start of one of the provider's slots"})
    return length // slot


def _check_hold_cap(session: Session, cap: int, customer_id: uuid.UUID, now: datetime) -> None:
    """At most `cap` live holds per customer (0: no cap), counted under the customer's advisory lock
    (held to the commit), so two holds at once can't both slip under it."""
    if not cap:
        return
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"booking-holds:{customer_id}"})
    live = session.scalar(select(func.count()).select_from(Booking).where(
        Booking.customer_id == customer_id, Booking.status == BookingStatus.HELD.value,
        Booking.hold_expires_at > now))
    if (live or 0) >= cap:
        raise Conflict(f"You already hold {cap} unconfirmed slots: confirm or cancel one first.",
                       details={"reason": "HOLD_LIMIT", "limit": cap})


def _payee_account(session: Session, settings: Settings, request: HoldRequest,
                   calendar: Calendar) -> str | None:
    """For a card booking: the provider's Connect account, ready to be paid (else 409)."""
    if request.payment_method != "card":
        return None
    if not settings.stripe.enabled:
        raise PaymentsDisabled()
    if not currencies.of(calendar.currency).card:
        raise Conflict(f"Card payments can't be taken in {calendar.currency}: book for cash.",
                       details={"reason": "CARD_NOT_TAKEN", "currency": calendar.currency})
    row = session.execute(select(Driver.stripe_account_id, Driver.charges_enabled, Driver.payouts_enabled)
                          .where(Driver.user_id == request.provider_id)).first()
    if row is None or not row[0] or not (row[1] and row[2]):
        raise Conflict("This provider can't be paid by card yet (Stripe payouts not enabled); book it "
                       "for cash.", details={"reason": "DRIVER_PAYOUTS_NOT_ENABLED",
                                             "providerId": str(request.provider_id)})
    return str(row[0])


#: The provider's lapsed holds in a range, expired (Core: it runs before every hold).
_RELEASE_LAPSED = text("""
UPDATE bookings SET status = 'EXPIRED', updated_at = :now
WHERE provider_id = :provider_id AND status = 'HELD' AND hold_expires_at <= :now
  AND blocked && tstzrange(:start, :end, '[)')
RETURNING id, customer_id, starts_at, ends_at
""")


def release_lapsed(session: Session, provider_id: uuid.UUID, blocked: tuple[datetime, datetime], *,
                   now: datetime, effects: Effects) -> int:
    """Expire the provider's holds in `blocked` whose `holdExpiresAt` has passed (what their expiry
    job would do: `EXPIRED`, and `bookings.settle` releases the card hold); how many."""
    lapsed = session.execute(_RELEASE_LAPSED, {"provider_id": provider_id, "now": now, "start": blocked[0],
                                               "end": blocked[1]}).all()
    for row in lapsed:
        before = BookingState(row.id, BookingStatus.HELD, row.customer_id, provider_id, row.starts_at,
                              row.ends_at)
        moved = move(before, BookingStatus.EXPIRED, by=BY_SYSTEM, at=now, reason=HOLD_LAPSED)
        record(session, effects, moved)
        add_job(session, BOOKINGS_SETTLE, str(row.id), dedupe_key=f"booking:{row.id}:settle:EXPIRED")
    return len(lapsed)
