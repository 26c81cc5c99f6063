"""`rides.reconcile` on the real PostgreSQL: every stalled ride gets its job again, however many
rides are legitimately waiting on their customers.

Rides are written straight into the database in the state a lost message leaves them in; the
reconciler runs with an explicit `now`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.services import dispatch_reconcile
from app.settings import Settings
from models import Bid, Driver, Job, Payment, Region, Ride, RideStatus, Role, User, VehicleType
from tests.integration.rides_support import PICKUP
from tests.integration.workers_support import db_fixture

__all__ = ["db_fixture"]

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@dataclasses.dataclass
class Farm:
    db: sessionmaker[Session]
    settings: Settings
    customer: uuid.UUID
    driver: uuid.UUID

    def rides(self, count: int, *, status: RideStatus = RideStatus.PENDING_BIDS,
              round_: int | None = None, checked: int | None = None, ago_s: float, bid: bool = False,
              card: bool = False, scheduled_in_s: float | None = None) -> list[uuid.UUID]:
        """`count` rides last touched `ago_s` seconds before NOW (with a live bid each if `bid`;
        booked for `scheduled_in_s` seconds after NOW if given)."""
        ids = [uuid.uuid4() for _ in range(count)]
        at = NOW - timedelta(seconds=ago_s)
        base = {"customer_id": self.customer, "region_code": "BER", "vehicle_type": VehicleType.VAN,
                "payment_method": "card" if card else "cash", "pickup_lat": PICKUP[0],
                "pickup_lng": PICKUP[1], "dropoff_lat": PICKUP[0] + 0.02, "dropoff_lng": PICKUP[1],
                "distance_km": 2.2, "status": status, "dispatch_round": round_, "checked_round": checked,
                "created_at": at, "updated_at": at,
                "scheduled_for": None if scheduled_in_s is None else NOW + timedelta(seconds=scheduled_in_s)}
        with self.db.begin() as session:
            session.execute(insert(Ride), [{**base, "id": ride_id} for ride_id in ids])
            if bid:
                session.execute(insert(Bid), [
                    {"id": uuid.uuid4(), "ride_id": ride_id, "driver_id": self.driver, "amount": 2500,
                     "currency": "EUR", "eta_minutes": 7, "status": "PENDING", "created_at": at}
                    for ride_id in ids])
        return ids

    def accepted_card_ride(self, *, accepted_ago_s: float, payment: str) -> uuid.UUID:
        """A card ride in BID_ACCEPTED whose payment (created at the accept) is in `payment`."""
        [ride_id] = self.rides(1, status=RideStatus.BID_ACCEPTED, round_=0, checked=0, ago_s=accepted_ago_s,
                               card=True)
        at = NOW - timedelta(seconds=accepted_ago_s)
        with self.db.begin() as session:
            session.add(Payment(id=uuid.uuid4(), ride_id=ride_id, customer_id=self.customer,
                                driver_id=self.driver, method="card", status=payment, amount=2500,
                                currency="EUR", commission_rate=Decimal("0.15"), application_fee=375,
                                created_at=at, updated_at=at))
        return ride_id

    def reconcile(self, **options: Any) -> dispatch_reconcile.ReconcileReport:
        with self.db.begin() as session:
            return dispatch_reconcile.reconcile(session, self.settings, now=NOW, **options)

    def jobs(self) -> list[tuple[str, list[Any]]]:
        with self.db() as session:
            return sorted((m.actor, list(m.args)) for m in session.scalars(select(Job)))


def _user(session: Session, role: Role) -> uuid.UUID:
    user_id = uuid.uuid4()
    session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", full_name="T",
                     phone="+491701234567", role=role))
    return user_id


@pytest.fixture
def farm(clean: None, db: sessionmaker[Session], settings: Settings) -> Iterator[Farm]:
    with db.begin() as session:
        session.add(Region(code="BER", name="Berlin", currency="EUR", commission_rate=Decimal("0.15")))
        customer, driver = _user(session, Role.CUSTOMER), _user(session, Role.DRIVER)
        session.flush()
        session.add(Driver(user_id=driver, vehicle_type=VehicleType.VAN))
    yield Farm(db, settings, customer, driver)


def test_a_stalled_ride_behind_500_rides_waiting_on_their_customers_is_redriven_in_one_run(
    farm: Farm,
) -> None:
    # Given 501 rides whose bids are ready, their customers still inside the acceptance window,
    # every one of them older than the stalled ride
    window = farm.settings.dispatch.accept_window_s
    farm.rides(501, round_=0, checked=0, bid=True, ago_s=window - 60)
    # And a ride whose bid check was lost (its round started long enough ago for it to be overdue)
    stalled = farm.rides(1, round_=0, ago_s=window - 120)[0]

    # When the reconciler runs once
    report = farm.reconcile()

    # Then the stalled ride's check is sent again, and the waiting rides are left to their customers
    assert (report.steps, report.checks, report.expiries) == (0, 1, 0)
    assert farm.jobs() == [("dispatch.check_bids", [str(stalled), 0])]


def test_keyset_pages_reach_every_stalled_ride_in_one_run(farm: Farm) -> None:
    stalled = farm.rides(5, ago_s=300)  # first rounds never ran

    report = farm.reconcile(page_size=2)

    assert report.steps == 5
    assert farm.jobs() == sorted(("dispatch.step", [str(ride), 0]) for ride in stalled)


def test_a_run_is_bounded_and_takes_the_oldest_first(farm: Farm) -> None:
    oldest = farm.rides(4, ago_s=600)
    farm.rides(3, ago_s=300)

    assert farm.reconcile(page_size=2, max_pages=2).steps == 4
    assert farm.jobs() == sorted(("dispatch.step", [str(ride), 0]) for ride in oldest)


def test_each_kind_of_stall_gets_its_job_and_nothing_not_yet_due_does(farm: Farm) -> None:
    dispatch, stripe = farm.settings.dispatch, farm.settings.stripe
    # Given a ride of each kind of stall
    never_started = farm.rides(1, ago_s=60)[0]
    check_lost = farm.rides(1, round_=1, checked=0, ago_s=dispatch.bid_window_s + 60)[0]
    widening_lost = farm.rides(1, round_=0, checked=0, ago_s=60)[0]
    window_end_lost = farm.rides(1, round_=1, checked=1, bid=True, ago_s=dispatch.accept_window_s + 60)[0]
    hold_end_lost = farm.accepted_card_ride(accepted_ago_s=stripe.hold_timeout_s + 60, payment="pending")
    # And rides that are waiting as they should
    farm.rides(1, ago_s=5)  # just created: its first round is on its way
    farm.rides(1, round_=0, ago_s=dispatch.bid_window_s - 30)  # the bid window is still open
    farm.rides(1, round_=0, checked=0, bid=True, ago_s=dispatch.accept_window_s - 30)  # customer deciding
    farm.accepted_card_ride(accepted_ago_s=stripe.hold_timeout_s - 30, payment="pending")  # confirming
    farm.accepted_card_ride(accepted_ago_s=stripe.hold_timeout_s + 60, payment="authorized")  # held
    farm.rides(1, status=RideStatus.CANCELLED, ago_s=3600)

    # When the reconciler runs
    report = farm.reconcile()

    # Then each stalled ride, and only those, has its job again
    assert (report.steps, report.checks, report.expiries) == (2, 1, 2)
    assert farm.jobs() == sorted([
        ("dispatch.step", [str(never_started), 0]),
        ("dispatch.check_bids", [str(check_lost), 1]),
        ("dispatch.step", [str(widening_lost), 1]),
        ("rides.expire_bids", [str(window_end_lost), 1]),
        ("rides.expire_hold", [str(hold_end_lost)]),
    ])


def test_a_ride_booked_ahead_waits_for_its_first_round_to_be_due_then_is_redriven_if_it_never_began(
    farm: Farm,
) -> None:
    lead = farm.settings.dispatch.schedule_lead_s
    # Given rides booked a day ago, long past the reconciler's grace, none of them dispatched yet:
    farm.rides(1, ago_s=86_400, scheduled_in_s=lead + 600)  # its first round is due in ten minutes
    farm.rides(1, ago_s=86_400, scheduled_in_s=lead - 10)  # due ten seconds ago: within the grace
    lost = farm.rides(1, ago_s=86_400, scheduled_in_s=lead - 120)[0]  # due two minutes ago
    passed = farm.rides(1, ago_s=86_400, scheduled_in_s=-3600)[0]  # its pickup time is an hour gone
    # And one whose first round is on, its bid window still open
    farm.rides(1, round_=0, ago_s=60, scheduled_in_s=lead - 120)

    # When the reconciler runs
    report = farm.reconcile()

    # Then only the rides whose first round is overdue get it again
    assert (report.steps, report.checks, report.expiries) == (2, 0, 0)
    assert farm.jobs() == sorted([("dispatch.step", [str(lost), 0]), ("dispatch.step", [str(passed), 0])])
