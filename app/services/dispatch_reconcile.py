"""`rides.reconcile`: re-drive rides whose next job was lost (Redis restarted empty, a message lost).

Only rides that need action are selected — the condition is in SQL — so any number of rides
legitimately waiting (bids ready and the customer deciding, a hold being confirmed) can never fill
a page and hide a stalled one. What needs action, and the job sent again:

- `PENDING_BIDS` with no round started → `dispatch.step(ride, 0)`; for a ride booked ahead
  (`scheduled_for`), only once its first round is due (`DISPATCH_SCHEDULE_LEAD` before it) + grace:
  until then its waiting job is not lost, and a job sent now would dispatch it early;
- a round whose bid check is overdue (`DISPATCH_BID_WINDOW` + grace after the round started) →
  `dispatch.check_bids(ride, round)`;
- a round checked without live bids, with rounds left (the widening never began) →
  `dispatch.step(ride, round + 1)`;
- a round checked with live bids `DISPATCH_ACCEPT_WINDOW` + grace ago (its window's end was lost)
  → `rides.expire_bids(ride, round)`;
- a card ride still `BID_ACCEPTED`, its payment not secured `PAYMENT_HOLD_TIMEOUT` + grace after
  the accept → `rides.expire_hold(ride)`.

Each selection walks keyset pages (`ORDER BY updated_at, id` for rides; the payment's `created_at`
for holds) until it runs dry or `max_pages` pages were taken, so one run reaches every candidate up
to `page_size * max_pages` of each kind; the next run starts from the oldest again. The jobs'
compare-and-sets make a duplicate (a job that was only slow, not lost) harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select, tuple_
from sqlalchemy.orm import Session

from app.keys import DISPATCH_CHECK_BIDS, DISPATCH_STEP, RIDES_EXPIRE_BIDS, RIDES_EXPIRE_HOLD
from app.logging import get_logger
from app.outbox import add_job
from app.services.payments import HOLD_SECURED
from app.settings import Settings
from models import Bid, BidStatus, Payment, PaymentMethod, Ride, RideStatus

log = get_logger("dispatch")


@dataclass(frozen=True)
class ReconcileReport:
    steps: int
    checks: int
    expiries: int = 0


def reconcile(session: Session, settings: Settings, *, now: datetime | None = None, grace_s: int = 30,
              page_size: int = 500, max_pages: int = 20) -> ReconcileReport:
    """Send again the job of every ride that needs one (see the module docstring)."""
    now = now or datetime.now(UTC)
    steps = checks = expiries = 0
    for ride_id, round_, checked, live, _ in _pages(session, _stalled_dispatch(settings, now, grace_s),
                                                  page_size, max_pages):
        if round_ is None:
            add_job(session, DISPATCH_STEP, str(ride_id), 0)
            steps += 1
        elif checked is None or checked < round_:
            add_job(session, DISPATCH_CHECK_BIDS, str(ride_id), round_)
            checks += 1
        elif live:
            add_job(session, RIDES_EXPIRE_BIDS, str(ride_id), round_)
            expiries += 1
        else:
            add_job(session, DISPATCH_STEP, str(ride_id), round_ + 1)
            steps += 1
    for ride_id, *_ in _pages(session, _overdue_holds(settings, now, grace_s), page_size, max_pages):
        add_job(session, RIDES_EXPIRE_HOLD, str(ride_id))
        expiries += 1
    if steps or checks or expiries:
        log.warning("dispatch.reconciled", steps=steps, checks=checks, expiries=expiries)
    return ReconcileReport(steps, checks, expiries)


def _stalled_dispatch(settings: Settings, now: datetime, grace_s: int) -> Select[*tuple[Any, ...]]:
    """PENDING_BIDS rides that need a job, oldest first; keyed by (updated_at, id)."""
    grace = timedelta(seconds=grace_s)
    live = exists().where(Bid.ride_id == Ride.id, Bid.status == BidStatus.PENDING)
    checked = Ride.checked_round == Ride.dispatch_round
    # A scheduled ride's first round is due `schedule_lead_s` before it (`ride_creation`).
    first_round_due = or_(
        Ride.scheduled_for.is_(None),
        Ride.scheduled_for < now - grace + timedelta(seconds=settings.dispatch.schedule_lead_s))
    needs_action = or_(
        and_(Ride.dispatch_round.is_(None), first_round_due),
        and_(Ride.dispatch_round.is_not(None),
             or_(Ride.checked_round.is_(None), Ride.checked_round < Ride.dispatch_round),
             Ride.updated_at < now - grace - timedelta(seconds=settings.dispatch.bid_window_s)),
        and_(checked, live,
             Ride.updated_at < now - grace - timedelta(seconds=settings.dispatch.accept_window_s)),
        and_(checked, ~live, Ride.dispatch_round + 1 < len(settings.dispatch.radii_km)),
    )
    return (select(Ride.id, Ride.dispatch_round, Ride.checked_round, live.label("live"), Ride.updated_at)
            .where(Ride.status == RideStatus.PENDING_BIDS, Ride.updated_at < now - grace, needs_action)
            .order_by(Ride.updated_at, Ride.id))


def _overdue_holds(settings: Settings, now: datetime, grace_s: int) -> Select[*tuple[Any, ...]]:
    """Card rides still BID_ACCEPTED past their hold timeout, payment not secured; keyed by the
    payment's (created_at, ride id)."""
    due = now - timedelta(seconds=settings.stripe.hold_timeout_s + grace_s)
    return (select(Ride.id, Payment.created_at).join(Payment, Payment.ride_id == Ride.id)
            .where(Ride.status == RideStatus.BID_ACCEPTED, Ride.payment_method == PaymentMethod.CARD,
                   Payment.status.not_in(HOLD_SECURED), Payment.created_at < due)
            .order_by(Payment.created_at, Ride.id))


def _pages(session: Session, query: Select[*tuple[Any, ...]], page_size: int, max_pages: int) -> list[Any]:
    """Every row of `query` (ordered by its last column, then the ride id, its first), up to
    `max_pages` keyset pages of `page_size`."""
    order_key = list(query.selected_columns)[-1]
    rows: list[Any] = []
    after: tuple[datetime, uuid.UUID] | None = None
    for _ in range(max_pages):
        page_query = query if after is None else query.where(tuple_(order_key, Ride.id) > tuple_(*after))
        page = session.execute(page_query.limit(page_size)).all()
        rows.extend(page)
        if len(page) < page_size:
            break
        after = (page[-1][-1], page[-1][0])
    return rows
