"""`retention.prune` (`app/services/retention.py`) on the run's real PostgreSQL.

Each table keeps its fresh rows and the rows still in use; old ones go in bounded, committed
batches; failed jobs and the money ledger are never touched.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.services import retention
from app.settings import RetentionSettings, get_settings
from models import (
    FailedJob,
    LedgerEntry,
    NotificationRequest,
    Offer,
    Region,
    Ride,
    RideEvent,
    RideStatus,
    Role,
    StripeEvent,
    User,
    VehicleType,
)
from tests.integration.rides_support import PICKUP
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    clock_tick,
    db_fixture,
    drain,
    start_worker_fixture,
)

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=400)
MONTHS_AGO = NOW - timedelta(days=40)
RECENTLY = NOW - timedelta(days=1)


@dataclasses.dataclass
class Farm:
    """Rows in every state retention tells apart, written straight into the database."""

    db: sessionmaker[Session]

    def __post_init__(self) -> None:
        self.customer = self._user(Role.CUSTOMER)
        self.driver = self._user(Role.DRIVER)
        with self.db.begin() as session:
            session.add(Region(code="BER", name="Berlin", currency="EUR", commission_rate=Decimal("0.15")))

    def _user(self, role: Role) -> uuid.UUID:
        user_id = uuid.uuid4()
        with self.db.begin() as session:
            session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", full_name="T",
                             phone="+491701234567", role=role))
        return user_id

    def ride(self, status: RideStatus, *, created: datetime, finished: datetime | None = None) -> uuid.UUID:
        """A ride created at `created` and last changed at `finished` (default: `created`), with
        a history row at its creation."""
        ride_id = uuid.uuid4()
        with self.db.begin() as session:
            session.add(Ride(id=ride_id, customer_id=self.customer, region_code="BER",
                             vehicle_type=VehicleType.VAN, payment_method="cash", pickup_lat=PICKUP[0],
                             pickup_lng=PICKUP[1], dropoff_lat=PICKUP[0] + 0.02, dropoff_lng=PICKUP[1],
                             distance_km=2.2, status=status, driver_id=self.driver, created_at=created,
                             updated_at=finished or created))
            session.flush()
            session.add(RideEvent(ride_id=ride_id, from_status=None, to_status="PENDING_BIDS",
                                  actor_role="customer", at=created))
            session.add(RideEvent(ride_id=ride_id, from_status="PENDING_BIDS", to_status=status.value,
                                  actor_role="system", at=finished or created))
        return ride_id

    def offer(self, ride_id: uuid.UUID, *, made: datetime) -> uuid.UUID:
        driver = self._user(Role.DRIVER)
        with self.db.begin() as session:
            session.add(Offer(ride_id=ride_id, driver_id=driver, round=0, distance_km=1.0,
                              expires_at=made + timedelta(minutes=3), created_at=made))
        return driver

    def notification(self, status: str, *, written: datetime) -> uuid.UUID:
        notification_id = uuid.uuid4()
        with self.db.begin() as session:
            session.add(NotificationRequest(id=notification_id, user_id=self.customer, template="booking",
                                            dedupe_key=str(notification_id), params={}, status=status,
                                            created_at=written))
        return notification_id

    def stripe_event(self, *, received: datetime, processed: datetime | None) -> str:
        event_id = f"evt_{uuid.uuid4().hex}"
        with self.db.begin() as session:
            session.add(StripeEvent(id=event_id, type="payment_intent.succeeded", payload={"id": event_id},
                                    received_at=received, processed_at=processed))
        return event_id

    def failed_job(self, *, failed: datetime) -> uuid.UUID:
        job_id = uuid.uuid4()
        with self.db.begin() as session:
            session.add(FailedJob(id=job_id, message_id=str(job_id), queue="dispatch", actor="dispatch.step",
                                  args=[], kwargs={}, options={}, exception_type="Boom",
                                  exception_message="boom", traceback="", attempts=9, failed_at=failed))
        return job_id

    def ledger_entry(self, ride_id: uuid.UUID, *, at: datetime) -> int:
        with self.db.begin() as session:
            entry = LedgerEntry(ride_id=ride_id, driver_id=self.driver, kind="cash_commission_owed",
                                amount=150, currency="EUR", dedupe_key=f"{ride_id}:commission",
                                created_at=at)
            session.add(entry)
            session.flush()
            return entry.id

    # --- what is left ------------------------------------------------------------------------------
    def ids(self, model: Any) -> set[Any]:
        """The ids left in a table (offers by their driver, history rows by their ride)."""
        key: Any = {Offer: Offer.driver_id, RideEvent: RideEvent.ride_id, LedgerEntry: LedgerEntry.id}.get(
            model, getattr(model, "id", None))
        with self.db() as session:
            return set(session.scalars(select(key)))


@pytest.fixture
def farm(clean: None, db: sessionmaker[Session]) -> Farm:
    return Farm(db)


@dataclasses.dataclass
class Seeded:
    old_final_ride: uuid.UUID
    finished_recently: uuid.UUID
    open_ride: uuid.UUID
    offers_gone: set[uuid.UUID]
    offers_kept: set[uuid.UUID]
    notifications_gone: set[uuid.UUID]
    notifications_kept: set[uuid.UUID]
    events_gone: set[str]
    events_kept: set[str]
    failed_job: uuid.UUID
    ledger_entry: int


def seed(farm: Farm) -> Seeded:
    old_final = farm.ride(RideStatus.COMPLETED, created=LONG_AGO)
    # created long ago but finished only ten days ago (a dispute settled late, say)
    finished_recently = farm.ride(RideStatus.CANCELLED, created=LONG_AGO, finished=NOW - timedelta(days=10))
    open_ride = farm.ride(RideStatus.IN_TRANSIT, created=MONTHS_AGO)
    return Seeded(
        old_final_ride=old_final, finished_recently=finished_recently, open_ride=open_ride,
        offers_gone={farm.offer(old_final, made=LONG_AGO), farm.offer(finished_recently, made=MONTHS_AGO)},
        offers_kept={farm.offer(open_ride, made=MONTHS_AGO), farm.offer(old_final, made=RECENTLY)},
        notifications_gone={farm.notification(status, written=MONTHS_AGO)
                            for status in ("sent", "delivered", "failed", "undelivered")},
        notifications_kept={farm.notification("queued", written=MONTHS_AGO),
                            farm.notification("sending", written=MONTHS_AGO),
                            farm.notification("delivered", written=RECENTLY)},
        events_gone={farm.stripe_event(received=MONTHS_AGO, processed=MONTHS_AGO)},
        events_kept={farm.stripe_event(received=MONTHS_AGO, processed=None),
                     farm.stripe_event(received=MONTHS_AGO, processed=RECENTLY)},
        failed_job=farm.failed_job(failed=LONG_AGO),
        ledger_entry=farm.ledger_entry(old_final, at=LONG_AGO),
    )


def run_once(db: sessionmaker[Session], settings: RetentionSettings) -> list[retention.Batch]:
    """One run as the job runs it: every batch committed on its own."""
    batches = []
    with db() as session:
        for batch in retention.prune(session, settings, now=datetime.now(UTC)):
            session.commit()
            batches.append(batch)
    return batches


def test_the_clock_sends_retention_and_a_worker_deletes_exactly_the_old_rows(
    farm: Farm, start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given rows of every kind, old and fresh, in use and done with, and a worker
    seeded = seed(farm)
    start_worker(relay=get_settings())

    # When the clock sends retention (default settings)
    clock_tick(db, "retention.prune")

    # Then old offers of finished rides, old done notifications and old handled events are gone
    assert farm.ids(Offer) == seeded.offers_kept
    assert farm.ids(NotificationRequest) == seeded.notifications_kept
    assert farm.ids(StripeEvent) == seeded.events_kept
    # And ride history (kept unless asked), failed jobs and the ledger are all still there
    assert farm.ids(RideEvent) == {seeded.old_final_ride, seeded.finished_recently, seeded.open_ride}
    # (and the job did not fail: that would have recorded a second failed job)
    assert farm.ids(FailedJob) == {seeded.failed_job}
    assert farm.ids(LedgerEntry) == {seeded.ledger_entry}

    # When it runs again, nothing more goes
    clock_tick(db, "retention.prune")
    assert farm.ids(Offer) == seeded.offers_kept
    assert farm.ids(NotificationRequest) == seeded.notifications_kept


def test_ride_history_goes_only_when_asked_and_only_for_rides_finished_that_long_ago(
    farm: Farm, db: sessionmaker[Session]
) -> None:
    # Given rides created 400 days ago, one finished then and one finished ten days ago
    seeded = seed(farm)

    # When retention runs with a history retention of 365 days
    run_once(db, RetentionSettings(ride_history_days=365))

    # Then only the history of the ride finished 400 days ago is gone; the ride itself stays
    assert farm.ids(RideEvent) == {seeded.finished_recently, seeded.open_ride}
    assert farm.ids(Ride) == {seeded.old_final_ride, seeded.finished_recently, seeded.open_ride}
    assert farm.ids(LedgerEntry) == {seeded.ledger_entry}


def test_zero_days_keeps_a_table_forever(farm: Farm, db: sessionmaker[Session]) -> None:
    # Given old rows everywhere
    seeded = seed(farm)

    # When retention runs with every table kept forever
    batches = run_once(db, RetentionSettings(offers_days=0, notifications_days=0, stripe_events_days=0))

    # Then nothing was even looked at
    assert batches == []
    assert farm.ids(Offer) == seeded.offers_gone | seeded.offers_kept


def test_a_backlog_larger_than_the_bound_is_pruned_over_several_runs_one_batch_per_commit(
    farm: Farm, db: sessionmaker[Session]
) -> None:
    # Given 25 old delivered notifications, one fresh, and at most 10 deleted per run, 4 per batch
    for _ in range(25):
        farm.notification("delivered", written=MONTHS_AGO)
    fresh = farm.notification("delivered", written=RECENTLY)
    bound = RetentionSettings(max_rows_per_run=10, batch_size=4)

    # When the first batch of a run is done
    with db() as session:
        batches = (b for b in retention.prune(session, bound, now=datetime.now(UTC))
                   if b.table == "notifications")
        first = next(batches)
        session.commit()
        # Then it is committed on its own: another connection sees it gone
        assert first == retention.Batch("notifications", 4)
        assert len(farm.ids(NotificationRequest)) == 22
        rest = []
        for batch in batches:
            session.commit()
            rest.append(batch.deleted)
    # And the run stops at the bound
    assert rest == [4, 2]
    assert len(farm.ids(NotificationRequest)) == 16

    # When it runs twice more
    second, third = run_once(db, bound), run_once(db, bound)

    # Then the backlog is gone over those runs and the fresh row stays
    assert [b.deleted for b in second if b.table == "notifications"] == [4, 4, 2]
    assert [b.deleted for b in third if b.table == "notifications"] == [4, 1]
    assert farm.ids(NotificationRequest) == {fresh}


def test_a_row_someone_is_changing_is_left_for_the_next_run(farm: Farm, db: sessionmaker[Session]) -> None:
    # Given two old handled Stripe events, one of them locked by a transaction still open
    busy = farm.stripe_event(received=MONTHS_AGO, processed=MONTHS_AGO)
    farm.stripe_event(received=MONTHS_AGO, processed=MONTHS_AGO)  # idle
    with db() as other:
        other.execute(select(StripeEvent).where(StripeEvent.id == busy).with_for_update())

        # When retention runs meanwhile
        run_once(db, RetentionSettings())

        # Then it deleted the idle one without waiting for the busy one
        assert farm.ids(StripeEvent) == {busy}
        other.rollback()

    # And the next run deletes that one too
    run_once(db, RetentionSettings())
    assert farm.ids(StripeEvent) == set()


def test_each_batch_can_reach_its_rows_by_tuple_id(farm: Farm, db: sessionmaker[Session]) -> None:
    # (`ctid = ANY(ARRAY(...))` lets the DELETE fetch the rows the sub-select picked instead of
    # scanning the table a second time. On these near-empty tables a scan is cheaper, so scans are
    # priced out to see the plan of a big table: a table of 200,000 rows gets it unasked.)
    for rule in retention.RULES:
        # When PostgreSQL plans a rule's batch
        with db() as session:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(session.scalars(text(f"EXPLAIN {retention.batch_delete(rule).text}"),
                                              {"cutoff": NOW, "size": 1000}))
        # Then the DELETE reaches the rows the sub-select picked by their ctid (a TID scan)
        assert f"Tid Scan on {rule.table}" in plan, plan

