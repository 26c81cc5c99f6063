"""The durable job ledger end to end on the run's PostgreSQL and Redis.

A job written with `app.outbox.add_job` in a transaction exists exactly when that transaction
commits, is handed to Redis within moments (woken by NOTIFY), stays a row until its own
transaction marks it done, waits in PostgreSQL until it is due, survives Redis being unreachable
or restarted empty at any point, and is retried from PostgreSQL when it fails — acting once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.keys import JobKind
from app.outbox import add_job
from app.settings import Settings
from jobs.base import JobContext, job
from models import AuditEntry, FailedJob, Job, JobState
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    Runs,
    WorkerFactory,
    broker_redis_fixture,
    db_fixture,
    start_worker_fixture,
    wait_for,
)
from tests.integration.workers_support import run_worker_until as run_farm_worker_until
from tests.integration.workers_support import side_broker as farm_side_broker
from workers.middleware import LedgerRelayMiddleware
from workers.relay import LedgerRelay, check_leases

QUEUE = "test-ledger"
ACTOR = "test.ledger_effect"
runs = Runs()
#: marker → how many of its runs should raise before one succeeds.
failures: dict[str, int] = {}


@job(ACTOR, queue=QUEUE, max_retries=2, min_backoff_ms=100, max_backoff_ms=200)
def ledger_effect(ctx: JobContext, marker: str, *, note: str = "") -> None:
    """Writes one audit row (its effect, in the job's transaction); may be told to fail first."""
    runs.record(marker, {"message_id": ctx.message_id, "note": note, "at": time.time()})
    ctx.uow.session.add(AuditEntry(actor_role="system", action="test.ledger", target_id=marker))
    if failures.get(marker, 0) > 0:
        failures[marker] -= 1
        raise RuntimeError(f"{marker} failed on purpose")


@pytest.fixture(autouse=True)
def _fresh_runs() -> None:
    runs.clear()
    failures.clear()


def relay_settings(settings: Settings, *, poll_s: float = 30.0, batch: int | None = None,
                   lease_s: float | None = None) -> Settings:
    """Settings whose relay only polls every `poll_s` (so only NOTIFY can make it quick)."""
    worker = dataclasses.replace(settings.worker, relay_poll_interval_s=poll_s,
                                 relay_batch_size=batch or settings.worker.relay_batch_size,
                                 ledger_lease_s=lease_s or settings.worker.ledger_lease_s,
                                 ledger_lease_check_interval_s=0.2)
    return dataclasses.replace(settings, worker=worker)


def commit_job(db: sessionmaker[Session], marker: str, **options: Any) -> uuid.UUID:
    with db.begin() as session:
        return add_job(session, JobKind(ACTOR, QUEUE), marker, **options)


def effects(db: sessionmaker[Session], marker: str) -> int:
    """How many times the job's effect committed."""
    with db() as session:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "test.ledger",
                                                                   AuditEntry.target_id == marker)
        return int(session.scalar(query) or 0)


def row(db: sessionmaker[Session], message_id: uuid.UUID) -> Job:
    with db() as session:
        found = session.scalar(select(Job).where(Job.message_id == message_id))
        assert found is not None
        return found


def state(db: sessionmaker[Session], message_id: uuid.UUID) -> str:
    return row(db, message_id).state


# --- the happy path ------------------------------------------------------------------------------
def test_a_committed_job_runs_once_and_its_row_is_done_with_its_effect(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker with its relay
    start_worker(relay=relay_settings(settings))
    # When a transaction writes a job and commits
    message_id = commit_job(db, "committed", note="hello")
    # Then the actor runs with the row's message id and arguments, and the row is done
    [run] = wait_for(lambda: runs.values("committed"), what="the committed job to run")
    assert run["message_id"] == str(message_id)
    assert run["note"] == "hello"
    wait_for(lambda: state(db, message_id) == JobState.DONE, what="the row to be done")
    assert effects(db, "committed") == 1
    assert row(db, message_id).finished_at is not None


def test_a_rolled_back_job_never_exists(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker with its relay
    start_worker(relay=relay_settings(settings))
    # When one transaction writes a job and rolls back, and a later one writes a job and commits
    with db() as session:
        add_job(session, JobKind(ACTOR, QUEUE), "rolled-back")
        session.rollback()
    commit_job(db, "committed-after")
    # Then the later job runs and the rolled-back one never does (and has no row)
    wait_for(lambda: runs.count("committed-after"), what="the committed job to run")
    assert runs.count("rolled-back") == 0
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_the_relay_is_woken_by_notify_not_by_its_poll(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker whose relay polls only every 30 s, and has already handed a first job over
    start_worker(relay=relay_settings(settings, poll_s=30.0))
    commit_job(db, "warm-up")
    wait_for(lambda: runs.count("warm-up"), what="the warm-up job to run")
    # When another job is committed
    committed_at = time.time()
    commit_job(db, "woken")
    # Then it runs within a couple of seconds, long before the next poll
    [run] = wait_for(lambda: runs.values("woken"), what="the NOTIFY-woken job", timeout=5)
    assert run["at"] - committed_at < 2.0


def test_a_waiting_relay_stops_promptly(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker whose relay (polling every 30 s) is waiting for work
    worker = start_worker(relay=relay_settings(settings, poll_s=30.0))
    commit_job(db, "warm-up")
    wait_for(lambda: runs.count("warm-up"), what="the warm-up job to run")
    [relay] = [m._relay for m in worker.broker.middleware if isinstance(m, LedgerRelayMiddleware)]
    # When it is stopped (as the worker does at shutdown)
    asked = time.monotonic()
    relay.stop()
    # Then it has stopped within a second, not at its next poll
    assert not relay.is_alive()
    assert time.monotonic() - asked < 1.0


def test_jobs_committed_while_no_relay_ran_are_handed_over_when_one_starts(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given five jobs committed while no worker was running
    markers = [f"backlog-{n}" for n in range(5)]
    ids = [commit_job(db, marker) for marker in markers]
    # When a worker starts (its relay handing two rows over per batch)
    start_worker(relay=relay_settings(settings, poll_s=30.0, batch=2))
    # Then every job runs exactly once and every row is done
    wait_for(lambda: all(state(db, m) == JobState.DONE for m in ids), what="the backlog to be done")
    assert [effects(db, m) for m in markers] == [1] * 5


# --- due times -------------------------------------------------------------------------------------
def test_a_delayed_job_waits_in_postgresql_until_it_is_due(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings,
    broker_redis: redis.Redis,
) -> None:
    # Given a worker with its relay (polling every 30 s: only the due time can wake it)
    start_worker(relay=relay_settings(settings, poll_s=30.0))
    # When a job delayed by 1.5 s is committed
    message_id = commit_job(db, "delayed", delay_ms=1_500)
    due_at = row(db, message_id).due_at
    # Then, until it is due, it waits in PostgreSQL and nothing of it is in Redis
    time.sleep(0.5)
    assert state(db, message_id) == JobState.WAITING
    namespace = settings.redis.dramatiq_namespace
    assert broker_redis.hlen(f"{namespace}:{QUEUE}.msgs") == 0
    assert broker_redis.hlen(f"{namespace}:{QUEUE}.DQ.msgs") == 0
    # And it runs once it is due (the relay wakes for it), not before
    [run] = wait_for(lambda: runs.values("delayed"), what="the delayed job to run")
    assert run["at"] >= due_at.timestamp() - 0.01
    assert run["at"] - due_at.timestamp() < 3.0


# --- failed runs -----------------------------------------------------------------------------------
def test_a_failed_run_is_retried_from_postgresql_and_acts_once(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings,
    broker_redis: redis.Redis,
) -> None:
    # Given a job whose first run fails
    failures["flaky"] = 1
    start_worker(relay=relay_settings(settings, poll_s=30.0))
    message_id = commit_job(db, "flaky")
    # Then its retry waits in PostgreSQL (no Redis delay queue), runs, and its effect commits once
    wait_for(lambda: runs.count("flaky") == 2, what="the retry to run")
    wait_for(lambda: state(db, message_id) == JobState.DONE, what="the row to be done")
    assert effects(db, "flaky") == 1  # the failed run's effect rolled back
    assert row(db, message_id).attempts == 1
    assert "failed on purpose" in (row(db, message_id).last_error or "")
    assert broker_redis.hlen(f"{settings.redis.dramatiq_namespace}:{QUEUE}.DQ.msgs") == 0


def test_a_job_out_of_retries_is_failed_and_recorded_for_replay_in_one_transaction(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings,
    broker_redis: redis.Redis,
) -> None:
    # Given a job that fails every run (1 + max_retries = 3 runs)
    failures["doomed"] = 99
    start_worker(relay=relay_settings(settings, poll_s=30.0))
    message_id = commit_job(db, "doomed")
    # Then it runs three times, its row is failed and the registry holds it once
    wait_for(lambda: state(db, message_id) == JobState.FAILED, what="the row to fail")
    assert runs.count("doomed") == 3
    with db() as session:
        [failed] = session.scalars(select(FailedJob).where(FailedJob.message_id == str(message_id))).all()
    assert failed.attempts == 3 and failed.actor == ACTOR and failed.args == ["doomed"]
    assert "failed on purpose" in failed.exception_message
    assert effects(db, "doomed") == 0
    # And it was not dead-lettered in Redis too
    assert broker_redis.zcard(f"{settings.redis.dramatiq_namespace}:{QUEUE}.XQ") == 0


# --- Redis faults ----------------------------------------------------------------------------------
@pytest.fixture
def side_broker(settings: Settings, redis_server: Any) -> Iterator[tuple[RedisBroker, Settings]]:
    """A broker on a throw-away Redis (which a test may kill and restart) carrying the test actor."""
    side = dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=redis_server.url))
    broker = farm_side_broker(settings, redis_server.url, ACTOR)
    yield broker, side
    broker.client.close()


def run_worker_until(broker: RedisBroker, done: Any, *, what: str) -> None:
    run_farm_worker_until(broker, done, what=what, queues={QUEUE})


def test_a_job_whose_hand_over_fails_stays_waiting_until_redis_is_back(
    clean: None, db: sessionmaker[Session], side_broker: tuple[RedisBroker, Settings],
    redis_server: Any,
) -> None:
    broker, side = side_broker
    failed_passes = threading.Semaphore(0)

    class CountingRelay(LedgerRelay):
        def drain(self) -> int:
            try:
                return super().drain()
            except redis.ConnectionError:
                failed_passes.release()
                raise

    # Given a relay whose Redis has gone down
    relay = CountingRelay(broker, relay_settings(side, poll_s=0.2), sessions=db)
    redis_server.kill()
    relay.start()
    try:
        # When a job is committed and the relay tries (and fails) to hand it over, twice
        message_id = commit_job(db, "through-an-outage", note="kept")
        for _ in range(2):
            assert failed_passes.acquire(timeout=10), "the relay never tried to hand it over"
        # Then the row is still waiting
        assert state(db, message_id) == JobState.WAITING
        # When Redis is back, the same relay hands it over and a worker runs it once
        redis_server.start()
        wait_for(lambda: state(db, message_id) == JobState.HANDED, what="the hand-over after the outage")
        assert relay.is_alive()
    finally:
        relay.stop()
    run_worker_until(broker, lambda: state(db, message_id) == JobState.DONE, what="the job to run")
    assert effects(db, "through-an-outage") == 1


def test_redis_restarted_empty_after_the_hand_over_the_job_still_acts_once(
    clean: None, db: sessionmaker[Session], side_broker: tuple[RedisBroker, Settings], redis_server: Any,
) -> None:
    broker, side = side_broker
    relay = LedgerRelay(broker, relay_settings(side), sessions=db)
    # Given a job handed over to Redis (no worker has taken it yet)
    message_id = commit_job(db, "lost-with-redis")
    relay.drain()
    assert state(db, message_id) == JobState.HANDED
    first_epoch = row(db, message_id).epoch
    # When Redis restarts empty (it keeps nothing on disk)
    redis_server.kill()
    redis_server.start()
    # Then the relay's next pass sees a new data set and hands the job over again at once
    relay.drain()
    handed = row(db, message_id)
    assert handed.state == JobState.HANDED and handed.epoch != first_epoch
    # And a worker runs it: its effect commits exactly once
    run_worker_until(broker, lambda: state(db, message_id) == JobState.DONE, what="the job to run")
    assert effects(db, "lost-with-redis") == 1 and runs.count("lost-with-redis") == 1


def test_a_job_whose_message_vanished_is_handed_again_at_its_lease_and_one_in_redis_is_not(
    clean: None, db: sessionmaker[Session], side_broker: tuple[RedisBroker, Settings],
) -> None:
    broker, side = side_broker
    relay = LedgerRelay(broker, relay_settings(side, lease_s=0.2), sessions=db)
    # Given two jobs handed over with a short lease; one message then disappears from Redis
    # (what a worker killed mid-job whose message was lost, or a dropped retry, leaves behind)
    kept, lost = commit_job(db, "kept"), commit_job(db, "vanished")
    relay.drain()
    lost_row = row(db, lost)
    broker.client.hdel(f"{broker.namespace}:{QUEUE}.msgs", lost_row.redis_message_id)
    broker.client.lrem(f"{broker.namespace}:{QUEUE}", 0, lost_row.redis_message_id)
    time.sleep(0.3)
    # When the leases are checked
    renewed, handed_again = check_leases(broker, db, lease_s=30)
    # Then the one Redis holds keeps its hand-over; the vanished one is waiting again, due now
    assert (renewed, handed_again) == (1, 1)
    assert state(db, kept) == JobState.HANDED and state(db, lost) == JobState.WAITING
    # And after the next pass both run exactly once
    relay.drain()
    run_worker_until(broker, lambda: state(db, kept) == state(db, lost) == JobState.DONE,
                     what="both jobs to run")
    assert effects(db, "kept") == effects(db, "vanished") == 1


def test_a_retry_that_cannot_be_handed_over_is_still_retried(
    clean: None, db: sessionmaker[Session], side_broker: tuple[RedisBroker, Settings], redis_server: Any,
) -> None:
    broker, side = side_broker
    relay = LedgerRelay(broker, relay_settings(side), sessions=db)
    # Given a job whose first run fails
    failures["retry-through-outage"] = 1
    message_id = commit_job(db, "retry-through-outage")
    relay.drain()
    run_worker_until(broker, lambda: row(db, message_id).attempts == 1, what="the first run to fail")
    assert state(db, message_id) == JobState.WAITING  # its retry waits in PostgreSQL
    # When Redis is down at the retry's due time, the retry can't be handed over ...
    redis_server.kill()
    time.sleep(0.3)
    with pytest.raises(redis.ConnectionError):
        relay.drain()
    assert state(db, message_id) == JobState.WAITING
    # ... and once Redis is back it is, and it runs: the effect commits once
    redis_server.start()
    relay.drain()
    run_worker_until(broker, lambda: state(db, message_id) == JobState.DONE, what="the retry to run")
    assert effects(db, "retry-through-outage") == 1 and runs.count("retry-through-outage") == 2


def test_a_message_delivered_twice_acts_once(
    clean: None, db: sessionmaker[Session], side_broker: tuple[RedisBroker, Settings],
) -> None:
    broker, side = side_broker
    relay = LedgerRelay(broker, relay_settings(side), sessions=db)
    # Given a job handed over, whose message Redis then holds twice (a re-hand racing a slow worker)
    message_id = commit_job(db, "twice")
    relay.drain()
    from workers.relay import build_message

    with db() as session:
        job_row = session.scalar(select(Job).where(Job.message_id == message_id))
        broker.enqueue(build_message(job_row))
    # When a worker runs both
    run_worker_until(broker, lambda: broker.client.hlen(f"{broker.namespace}:{QUEUE}.msgs") == 0
                     and state(db, message_id) == JobState.DONE, what="both deliveries to be acked")
    # Then the job ran once: the second delivery found its row done
    assert runs.count("twice") == 1 and effects(db, "twice") == 1


def test_every_farm_actor_runs_through_the_ledger_claim() -> None:
    # Every actor the farm declares is made by `@job`, whose wrapper claims the message's ledger row
    # in the job's own transaction (or marks it done after an autocommit job): what makes every one
    # of them act once when Redis loses, repeats or redelivers its message.
    import jobs
    from jobs import base

    farm_actors = {name: actor for name, actor in jobs.broker.actors.items()
                   if actor.fn.__module__.startswith("jobs.")}
    assert len(farm_actors) >= 15
    wrapper = (base.__file__, "run")
    not_claimed = sorted(name for name, actor in farm_actors.items()
                         if (actor.fn.__code__.co_filename, actor.fn.__code__.co_name) != wrapper)
    assert not_claimed == []


def test_done_jobs_are_pruned_after_their_retention_and_failed_or_live_ones_stay(
    clean: None, db: sessionmaker[Session],
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from workers.relay import prune_done

    # Given jobs done two hours and one minute ago, one failed two hours ago, and one waiting
    ids = {name: commit_job(db, name) for name in ("done-old", "done-recent", "failed-old", "waiting")}
    now = datetime.now(UTC)
    with db.begin() as session:
        for name, new_state, ago in (("done-old", "done", timedelta(hours=2)),
                                     ("done-recent", "done", timedelta(minutes=1)),
                                     ("failed-old", "failed", timedelta(hours=2))):
            session.execute(update(Job).where(Job.message_id == ids[name])
                            .values(state=new_state, finished_at=now - ago))
    # When a relay prunes with an hour's retention, one row per batch
    assert prune_done(db, retention_s=3600, limit=1) == 1
    assert prune_done(db, retention_s=3600, limit=1) == 0
    # Then only the old done job is gone
    with db() as session:
        left = set(session.scalars(select(Job.message_id)))
    assert left == {ids["done-recent"], ids["failed-old"], ids["waiting"]}


def test_a_job_for_an_actor_the_farm_no_longer_declares_fails_once_for_replay(
    start_worker: WorkerFactory, db: sessionmaker[Session], settings: Settings
) -> None:
    # Given a job of an actor that was renamed away, on a queue the worker serves
    start_worker(relay=relay_settings(settings))
    with db.begin() as session:
        message_id = add_job(session, JobKind("test.renamed_away", QUEUE), "x")
    # Then it is failed (not handed again forever) and in the registry
    wait_for(lambda: state(db, message_id) == JobState.FAILED, what="the job to fail")
    with db() as session:
        [failed] = session.scalars(select(FailedJob).where(FailedJob.message_id == str(message_id))).all()
    assert failed.actor == "test.renamed_away"
