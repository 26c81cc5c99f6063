"""Dispatch rounds over the real driver index (Redis GEO) and PostgreSQL.

The service is driven round by round (deterministic); one test runs the whole chain through a
real worker with a one-second bid window.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.driver_index import DriverIndexReader
from app.keys import DISPATCH_STEP, RedisKeys
from app.outbox import add_job
from app.redis_conn import create_sync_redis
from app.services import dispatch
from app.settings import Settings
from models import (
    Bid,
    Driver,
    Job,
    NotificationRequest,
    Offer,
    Region,
    Ride,
    RideEvent,
    RideStatus,
    Role,
    User,
    VehicleType,
)
from models.jobs import LIVE_STATES
from tests.integration.rides_support import PICKUP, offset_km
from tests.integration.workers_support import (
    db_fixture,
    run_worker_until,
    side_broker,
    start_worker_fixture,
    wait_for,
)
from workers.resources import get_resources

__all__ = ["db_fixture", "start_worker_fixture"]


class Emits:
    """What a step or check published, applied only when its transaction committed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], Any]] = []

    def __call__(self, event: str, payload: dict[str, Any], room: Any) -> None:
        self.sent.append((event, payload, room))

    def rooms(self, event: str) -> list[Any]:
        return [room for name, _, room in self.sent if name == event]


@dataclasses.dataclass
class World:
    db: sessionmaker[Session]
    index: DriverIndexReader
    settings: Settings
    emits: Emits

    def customer(self) -> uuid.UUID:
        return self._user(Role.CUSTOMER)

    def driver(
        self,
        km_east: float,
        *,
        vehicle: str = "van",
        online: bool = True,
        active: bool = True,
        seen_ago_s: float = 0.0,
        busy: bool = False,
    ) -> uuid.UUID:
        driver_id = self._user(Role.DRIVER, active=active)
        lat, lng = offset_km(PICKUP, km_east)
        seen = datetime.now(UTC) - timedelta(seconds=seen_ago_s)
        with self.db.begin() as session:
            session.add(
                Driver(
                    user_id=driver_id,
                    vehicle_type=VehicleType(vehicle),
                    availability="online" if online else "offline",
                    active_ride_id=uuid.uuid4() if busy else None,
                    last_lat=lat,
                    last_lng=lng,
                    last_seen_at=seen,
                )
            )
        # The index holds whoever the services put there; a stale or busy driver may linger in it.
        self.index.place(driver_id, vehicle, lat, lng, seen.timestamp())
        return driver_id

    def _user(self, role: Role, *, active: bool = True) -> uuid.UUID:
        user_id = uuid.uuid4()
        with self.db.begin() as session:
            session.add(
                User(
                    id=user_id,
                    email=f"{user_id}@example.com",
                    password_hash="x",
                    full_name="T",
                    phone="+491701234567",
                    role=role,
                    is_active=active,
                )
            )
        return user_id

    def ride(self, customer: uuid.UUID, *, vehicle: str = "van") -> uuid.UUID:
        ride_id = uuid.uuid4()
        with self.db.begin() as session:
            if session.get(Region, "BER") is None:
                session.add(
                    Region(code="BER", name="Berlin", currency="EUR", commission_rate=Decimal("0.15"))
                )
                session.flush()
            session.add(
                Ride(
                    id=ride_id,
                    customer_id=customer,
                    region_code="BER",
                    vehicle_type=VehicleType(vehicle),
                    payment_method="cash",
                    pickup_lat=PICKUP[0],
                    pickup_lng=PICKUP[1],
                    dropoff_lat=PICKUP[0] + 0.02,
                    dropoff_lng=PICKUP[1],
                    distance_km=2.2,
                    status=RideStatus.PENDING_BIDS,
                )
            )
        return ride_id

    def _run(self, action: Callable[[Session, Callable[[Callable[[], None]], None]], Any]) -> Any:
        later: list[Callable[[], None]] = []
        with self.db.begin() as session:
            result = action(session, later.append)
        for callback in later:
            callback()
        return result

    def step(self, ride_id: uuid.UUID, round_: int) -> dispatch.StepResult:
        return self._run(
            lambda s, after: dispatch.step(
                s, self.index, self.settings.dispatch, ride_id, round_, after_commit=after, emit=self.emits
            )
        )

    def check(self, ride_id: uuid.UUID, round_: int) -> dispatch.CheckResult:
        return self._run(
            lambda s, after: dispatch.check_bids(
                s, self.settings.dispatch, ride_id, round_, after_commit=after, emit=self.emits
            )
        )

    def offers(self, ride_id: uuid.UUID) -> dict[uuid.UUID, int]:
        with self.db() as session:
            return {
                o.driver_id: o.round for o in session.scalars(select(Offer).where(Offer.ride_id == ride_id))
            }

    def ride_row(self, ride_id: uuid.UUID) -> Ride:
        with self.db() as session:
            return session.get_one(Ride, ride_id)

    def jobs(self, actor: str) -> list[list[Any]]:
        with self.db() as session:
            return [
                m.args for m in session.scalars(select(Job).where(Job.actor == actor))
            ]


@pytest.fixture
def world(clean: None, db: sessionmaker[Session], settings: Settings) -> Iterator[World]:
    client: redis.Redis = create_sync_redis(settings.redis)
    yield World(
        db=db, index=DriverIndexReader(client, RedisKeys(settings.redis)), settings=settings, emits=Emits()
    )
    client.close()


def test_rounds_widen_5_10_20_km_and_each_driver_is_offered_in_its_round_only(world: World) -> None:
    # Given vans at 3, 8 and 15 km from the pickup
    near, middle, far = world.driver(3), world.driver(8), world.driver(15)
    ride = world.ride(world.customer())

    # When the three rounds run with no bids in between
    assert world.step(ride, 0).offered == [near]
    assert world.check(ride, 0).outcome == "next_round"
    assert world.step(ride, 1).offered == [middle]
    assert world.check(ride, 1).outcome == "next_round"
    assert world.step(ride, 2).offered == [far]

    # Then each was offered once, in the round of its distance, and told on its own room
    assert world.offers(ride) == {near: 0, middle: 1, far: 2}
    assert world.emits.rooms("ride:offer") == [f"driver:{near}", f"driver:{middle}", f"driver:{far}"]
    offer = world.emits.sent[0][1]
    assert offer["rideId"] == str(ride) and offer["round"] == 0 and offer["vehicleType"] == "van"
    assert 2.9 < offer["distanceKm"] < 3.1 and offer["expiresAt"].endswith("Z")
    # And each round scheduled its bid check after the bid window
    assert sorted(a[1] for a in world.jobs("dispatch.check_bids")) == [0, 1, 2]


def test_after_the_last_round_without_bids_the_ride_has_no_drivers_and_the_customer_is_told(
    world: World,
) -> None:
    customer = world.customer()
    ride = world.ride(customer)
    for round_ in range(3):
        world.step(ride, round_)
        outcome = world.check(ride, round_).outcome

    assert outcome == "no_drivers"
    assert world.ride_row(ride).status == RideStatus.NO_DRIVERS_AVAILABLE
    event = next(p for name, p, _ in world.emits.sent if name == "ride:status")
    assert event["status"] == "NO_DRIVERS_AVAILABLE" and event["from"] == "PENDING_BIDS"
    assert event["by"] == {"id": None, "role": "system"}
    with world.db() as session:
        history = session.scalars(select(RideEvent).where(RideEvent.ride_id == ride)).all()
        assert [(h.to_status, h.actor_role) for h in history] == [("NO_DRIVERS_AVAILABLE", "system")]
        note = session.scalars(select(NotificationRequest)).one()
        assert (note.user_id, note.template) == (customer, "no_drivers")


def test_bids_in_a_round_tell_the_customer_instead_of_widening(world: World) -> None:
    driver = world.driver(2)
    customer = world.customer()
    ride = world.ride(customer)
    world.step(ride, 0)
    with world.db.begin() as session:
        session.add(Bid(ride_id=ride, driver_id=driver, amount=2500, currency="EUR", eta_minutes=7))

    result = world.check(ride, 0)

    assert (result.outcome, result.bids) == ("bids_ready", 1)
    assert ("bids:ready", {"rideId": str(ride), "count": 1, "round": 0}, f"ride:{ride}") in world.emits.sent
    assert world.jobs("dispatch.step") == []
    with world.db() as session:
        assert session.scalars(select(NotificationRequest.template)).all() == ["bids_ready"]


def test_a_redelivered_step_or_check_acts_once(world: World) -> None:
    driver = world.driver(2)
    ride = world.ride(world.customer())
    assert world.step(ride, 0).claimed

    # When both messages are delivered again
    again = world.step(ride, 0)
    world.check(ride, 0)
    world.check(ride, 0)

    # Then nothing changed twice: one offer, one bid check scheduled, one widening
    assert not again.claimed
    assert world.offers(ride) == {driver: 0}
    assert len(world.jobs("dispatch.check_bids")) == 1
    assert world.jobs("dispatch.step") == [[str(ride), 1]]
    # (the redelivered step re-sent the open offer: its first emit may have died with a worker)
    assert world.emits.rooms("ride:offer") == [f"driver:{driver}", f"driver:{driver}"]


def test_stale_offline_busy_suspended_and_wrong_vehicle_drivers_are_never_offered(world: World) -> None:
    eligible = world.driver(1)
    world.driver(1.2, seen_ago_s=world.settings.dispatch.driver_stale_after_s + 60)
    world.driver(1.4, online=False)
    world.driver(1.6, busy=True)
    world.driver(1.8, active=False)
    world.driver(2.0, vehicle="car")
    ride = world.ride(world.customer())

    for round_ in range(3):
        world.step(ride, round_)
        world.check(ride, round_)

    assert world.offers(ride) == {eligible: 0}


def test_at_most_max_offers_per_round_nearest_first(world: World) -> None:
    limit = world.settings.dispatch.max_offers_per_round
    drivers = [world.driver(0.1 + i * 0.05) for i in range(limit + 5)]
    ride = world.ride(world.customer())

    offered = world.step(ride, 0).offered

    assert offered == drivers[:limit]


def test_a_cancelled_or_accepted_ride_stops_the_rounds(world: World) -> None:
    world.driver(3)
    ride = world.ride(world.customer())
    with world.db.begin() as session:
        session.get_one(Ride, ride).status = RideStatus.CANCELLED

    assert not world.step(ride, 0).claimed
    assert world.check(ride, 0).outcome == "skipped"
    assert world.offers(ride) == {} and world.emits.sent == []


def test_the_whole_chain_runs_through_a_real_worker_until_no_drivers(
    world: World, start_worker: Any, settings: Settings
) -> None:
    # Given a worker (with its outbox relay) whose bid window is one second
    quick = dataclasses.replace(settings, dispatch=dataclasses.replace(settings.dispatch, bid_window_s=1))
    resources = get_resources()
    saved, resources.settings = resources.settings, quick
    try:
        start_worker(relay=quick)

        # When a ride's first round is committed to the outbox
        ride = world.ride(world.customer())
        with world.db.begin() as session:
            add_job(session, DISPATCH_STEP, str(ride), 0)

        # Then the ride walks rounds 0 → 1 → 2 and ends with no drivers after three bid windows
        wait_for(
            lambda: world.ride_row(ride).status == RideStatus.NO_DRIVERS_AVAILABLE,
            what="the ride to run out of rounds",
            timeout=20,
        )
    finally:
        resources.settings = saved
    assert world.ride_row(ride).checked_round == 2

    def outbox_empty() -> bool:  # the no-drivers notification's job was written with the last move
        with world.db() as session:
            live = select(func.count()).select_from(Job).where(Job.state.in_(LIVE_STATES))
            return session.scalar(live) == 0

    wait_for(outbox_empty, what="every job to be done")


def test_a_step_handed_over_before_redis_restarted_empty_offers_each_driver_once(
    world: World, redis_server: Any, settings: Settings
) -> None:
    from workers.relay import LedgerRelay

    broker = side_broker(settings, redis_server.url, "dispatch.step", "dispatch.check_bids")
    relay = LedgerRelay(broker, settings, sessions=world.db)
    try:
        # Given a ride whose first step was handed to Redis, two drivers nearby
        near, far = world.driver(1.0), world.driver(3.0)
        ride = world.ride(world.customer())
        with world.db.begin() as session:
            message_id = add_job(session, DISPATCH_STEP, str(ride), 0)
        relay.drain()
        # When Redis restarts empty before any worker took the message
        redis_server.kill()
        redis_server.start()
        relay.drain()
        # Then a worker runs the step (handed over again): each driver is offered the ride once
        def step_done() -> bool:
            with world.db() as session:
                return session.scalar(select(Job.state).where(Job.message_id == message_id)) == "done"

        run_worker_until(broker, step_done, what="the step", queues={"dispatch"})
        assert world.offers(ride) == {near: 0, far: 0}
        assert world.ride_row(ride).dispatch_round == 0
    finally:
        broker.client.close()
