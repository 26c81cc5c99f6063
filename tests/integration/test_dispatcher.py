"""The dispatcher: rounds and bid checks in batches, straight from the ledger (real PostgreSQL and Redis).

Jobs are written as the farm writes them (`add_job`, the ledger rows `POST /rides` and the rounds
write); the dispatcher is driven batch by batch, and once as the thread a worker runs.
"""

from __future__ import annotations

import dataclasses
import types
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update

from app.keys import DISPATCH_STEP, TOKENS_CLEANUP
from app.outbox import add_job
from models import FailedJob, Job, Offer, Ride
from tests.integration.test_dispatch import Emits, World, world
from tests.integration.workers_support import db_fixture, start_worker_fixture, wait_for
from workers import relay
from workers.dispatcher import Dispatcher

__all__ = ["db_fixture", "start_worker_fixture", "world"]


class Publisher:
    """Records what the batch published; `fail_next` makes the next pipeline fail like a dead Redis."""

    def __init__(self, emits: Emits) -> None:
        self.emits = emits
        self.fail_next = False
        self.pipelines = 0

    def emit(self, event: str, payload: dict[str, Any], room: Any) -> None:
        self.emits(event, payload, room)

    def emit_many(self, events: list[tuple[str, dict[str, Any], str]]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise redis.ConnectionError("Redis went away")
        self.pipelines += 1
        for event in events:
            self.emits(*event)


@pytest.fixture
def publisher(world: World) -> Publisher:
    return Publisher(world.emits)


def dispatcher(world: World, publisher: Publisher, *, index: Any = None, max_retries: int = 8,
               batch_size: int = 200) -> Dispatcher:
    settings = dataclasses.replace(world.settings, dispatch=dataclasses.replace(
        world.settings.dispatch, batch_size=batch_size))
    resources = types.SimpleNamespace(sessions=world.db, driver_index=index or world.index,
                                      publisher=publisher, settings=settings)
    return Dispatcher(settings, resources=resources,
                      actor_options=lambda actor: {"max_retries": max_retries, "min_backoff": 10})


def queue_step(world: World, ride_id: uuid.UUID, round_: int = 0) -> None:
    with world.db.begin() as session:
        add_job(session, DISPATCH_STEP, str(ride_id), round_)


def states(world: World, actor: str) -> list[str]:
    with world.db() as session:
        return list(session.scalars(select(Job.state).where(Job.actor == actor)))


def test_a_batch_offers_every_ride_its_nearest_drivers_and_schedules_each_bid_check(
    world: World, publisher: Publisher,
) -> None:
    # Given drivers at 1, 2 and 3 km and twelve rides waiting for their first round
    drivers = [world.driver(km) for km in (1, 2, 3)]
    rides = [world.ride(world.customer()) for _ in range(12)]
    for ride in rides:
        queue_step(world, ride)

    # When one batch runs
    batch = dispatcher(world, publisher).dispatch_batch()

    # Then every round started and each ride was offered to all three, nearest first
    assert (batch.jobs, batch.rounds, batch.offers) == (12, 12, 36)
    for ride in rides:
        assert world.offers(ride) == {d: 0 for d in drivers}
        assert world.ride_row(ride).dispatch_round == 0
    sent = [(payload["rideId"], room) for name, payload, room in world.emits.sent if name == "ride:offer"]
    assert sorted(sent) == sorted((str(r), f"driver:{d}") for r in rides for d in drivers)
    assert publisher.pipelines == 1  # every offer of the batch in one pipeline
    # And the steps are done, each ride's bid check waits for the end of its bid window
    assert states(world, "dispatch.step") == ["done"] * 12
    with world.db() as session:
        checks = session.scalars(select(Job).where(Job.actor == "dispatch.check_bids")).all()
    assert sorted(c.args[0] for c in checks) == sorted(str(r) for r in rides)
    assert all(c.state == "waiting" and c.due_at > datetime.now(UTC) + timedelta(seconds=100) for c in checks)


def test_a_step_delivered_twice_in_one_batch_acts_once(world: World, publisher: Publisher) -> None:
    driver = world.driver(1)
    ride = world.ride(world.customer())
    queue_step(world, ride)
    queue_step(world, ride)  # a replay, or the reconciler, wrote it again

    batch = dispatcher(world, publisher).dispatch_batch()

    assert batch.rounds == 1 and world.offers(ride) == {driver: 0}
    assert states(world, "dispatch.step") == ["done", "done"]
    assert len(states(world, "dispatch.check_bids")) == 1
    # The second one re-sent the round's open offer instead (its first emit may have been lost)
    assert world.emits.rooms("ride:offer").count(f"driver:{driver}") == 2


def test_a_batch_of_checks_widens_tells_and_gives_up_each_ride_by_its_own_bids(
    world: World, publisher: Publisher,
) -> None:
    from models import Bid

    driver = world.driver(2)
    with_bid, without, last = (world.ride(world.customer()) for _ in range(3))
    for ride in (with_bid, without):
        world.step(ride, 0)
    for round_ in range(3):
        world.step(last, round_)
        if round_ < 2:
            world.check(last, round_)
    with world.db.begin() as session:
        session.add(Bid(ride_id=with_bid, driver_id=driver, amount=2500, currency="EUR", eta_minutes=5))
        # the bid windows are over
        session.execute(update(Job).where(Job.actor == "dispatch.check_bids", Job.state == "waiting")
                        .values(due_at=datetime.now(UTC) - timedelta(seconds=1)))

    batch = dispatcher(world, publisher).dispatch_batch()

    assert batch.checks == 3
    assert world.emits.rooms("bids:ready") == [f"ride:{with_bid}"]
    assert world.ride_row(without).status == "PENDING_BIDS"
    with world.db() as session:
        next_steps = session.scalars(select(Job.args).where(Job.actor == "dispatch.step",
                                                            Job.state == "waiting")).all()
    assert next_steps == [[str(without), 1]]
    assert world.ride_row(last).status == "NO_DRIVERS_AVAILABLE"


def test_one_bad_job_fails_alone_and_the_rest_of_its_batch_is_dispatched(
    world: World, publisher: Publisher,
) -> None:
    driver = world.driver(1)
    good = world.ride(world.customer())
    queue_step(world, good)
    with world.db.begin() as session:  # a job no round can run (a hand-edited or corrupted row)
        add_job(session, DISPATCH_STEP, "not-a-ride", 0)
    worker = dispatcher(world, publisher, max_retries=1)

    worker.dispatch_batch()

    assert world.offers(good) == {driver: 0}
    with world.db() as session:
        bad = session.scalars(select(Job).where(Job.args[0].astext == "not-a-ride")).one()
    assert (bad.state, bad.attempts) == ("waiting", 1) and "ValueError" in (bad.last_error or "")
    assert bad.due_at > datetime.now(UTC) - timedelta(seconds=1)

    # Out of retries, it is failed and recorded for the CLI to replay
    with world.db.begin() as session:
        session.execute(update(Job).where(Job.id == bad.id).values(due_at=datetime.now(UTC)))
    worker.dispatch_batch()
    with world.db() as session:
        assert session.get_one(Job, bad.id).state == "failed"
        record = session.scalars(select(FailedJob).where(FailedJob.message_id == str(bad.message_id))).one()
    assert (record.actor, record.args, record.attempts) == ("dispatch.step", ["not-a-ride", 0], 2)


class DeadIndex:
    def nearby_many(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def test_redis_unreachable_spends_no_retry_and_the_rides_wait_in_the_ledger(
    world: World, publisher: Publisher,
) -> None:
    ride = world.ride(world.customer())
    queue_step(world, ride)

    with pytest.raises(redis.ConnectionError):
        dispatcher(world, publisher, index=DeadIndex()).dispatch_batch()

    with world.db() as session:
        job = session.scalars(select(Job).where(Job.actor == "dispatch.step")).one()
    assert (job.state, job.attempts) == ("waiting", 0)
    assert world.ride_row(ride).dispatch_round is None  # the claim rolled back with the batch
    assert dispatcher(world, publisher).dispatch_batch().rounds == 1  # and runs once Redis is back


def test_offers_lost_after_the_commit_are_sent_again_when_the_lease_lapses(
    world: World, publisher: Publisher,
) -> None:
    # Given a batch whose offers could not be published after its commit (the worker died there)
    driver = world.driver(1)
    ride = world.ride(world.customer())
    queue_step(world, ride)
    publisher.fail_next = True
    with pytest.raises(redis.ConnectionError):
        dispatcher(world, publisher).dispatch_batch()
    assert world.offers(ride) == {driver: 0} and world.emits.rooms("ride:offer") == []
    assert states(world, "dispatch.step") == ["handed"]

    # When its lease lapses, the relay finds no Redis message for it and puts it back
    with world.db.begin() as session:
        session.execute(update(Job).where(Job.actor == "dispatch.step")
                        .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
    broker = types.SimpleNamespace(client=redis.Redis.from_url(world.settings.redis.url), namespace="nothing")
    assert relay.check_leases(broker, world.db, lease_s=30) == (0, 1)  # type: ignore[arg-type]

    # Then the next batch re-sends the open offer, and the round is not run twice
    batch = dispatcher(world, publisher).dispatch_batch()
    assert batch.jobs == 1 and batch.rounds == 0
    assert world.emits.rooms("ride:offer") == [f"driver:{driver}"]
    assert world.offers(ride) == {driver: 0} and states(world, "dispatch.step") == ["done"]


def test_the_relay_leaves_the_dispatchers_rows_alone(world: World) -> None:
    ride = world.ride(world.customer())
    queue_step(world, ride)
    with world.db.begin() as session:
        add_job(session, TOKENS_CLEANUP)
    sent: list[Any] = []
    broker = types.SimpleNamespace(enqueue=lambda message: sent.append(message) or types.SimpleNamespace(
        options={"redis_message_id": str(uuid.uuid4())}))

    assert relay.hand_over(broker, world.db, epoch="e", batch_size=10, lease_s=30,  # type: ignore[arg-type]
                           skip=("dispatch.step", "dispatch.check_bids")) == 1
    assert [m.actor_name for m in sent] == ["tokens.cleanup"]
    assert states(world, "dispatch.step") == ["waiting"]


def test_the_dispatcher_thread_wakes_on_the_commit_of_a_new_ride(world: World, publisher: Publisher) -> None:
    driver = world.driver(1)
    worker = dispatcher(world, publisher)
    worker.start()
    try:
        wait_for(lambda: worker_listening(world), what="the dispatcher to listen")
        ride = world.ride(world.customer())
        queue_step(world, ride)
        wait_for(lambda: world.emits.rooms("ride:offer") == [f"driver:{driver}"], what="the offer")
        wait_for(lambda: states(world, "dispatch.step") == ["done"], what="the step marked done")
    finally:
        worker.stop()
    assert not worker.is_alive()


def worker_listening(world: World) -> bool:
    with world.db() as session:
        listeners = session.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN farm_dispatch%'")).scalar()
    return bool(listeners)


def test_a_batch_is_at_most_the_batch_size_and_the_rest_waits_for_the_next(
    world: World, publisher: Publisher,
) -> None:
    many_rides = [world.ride(world.customer()) for _ in range(5)]
    for ride in many_rides:
        queue_step(world, ride)
    worker = dispatcher(world, publisher, batch_size=2)

    assert [worker.dispatch_batch().jobs for _ in range(4)] == [2, 2, 1, 0]
    with world.db() as session:
        claimed = session.scalars(select(Ride.dispatch_round).where(Ride.id.in_(many_rides))).all()
        assert claimed == [0] * 5
        assert session.scalar(select(Offer.ride_id).limit(1)) is None  # no driver anywhere near
    assert states(world, "dispatch.step") == ["done"] * 5


def test_with_batching_off_each_round_goes_through_redis_as_its_own_message(
    world: World, start_worker: Any,
) -> None:
    from workers.resources import get_resources

    unbatched = dataclasses.replace(world.settings, dispatch=dataclasses.replace(
        world.settings.dispatch, batched=False))
    resources = get_resources()
    saved, resources.settings = resources.settings, unbatched
    try:
        driver = world.driver(1)
        start_worker(relay=unbatched, batches=unbatched)
        ride = world.ride(world.customer())
        queue_step(world, ride)
        wait_for(lambda: states(world, "dispatch.step") == ["done"], what="the round, run by Dramatiq")
    finally:
        resources.settings = saved
    assert world.offers(ride) == {driver: 0}
    with world.db() as session:
        job = session.scalars(select(Job).where(Job.actor == "dispatch.step")).one()
    assert job.redis_message_id is not None  # handed to Redis by the relay, not claimed by a dispatcher
