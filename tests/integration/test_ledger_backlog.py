"""The depth the autoscaler sees includes the jobs batch threads take straight from the ledger
(real PostgreSQL and Redis): a backlog of rides waiting for a dispatcher is a deep dispatch queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.queue_stats import LedgerBacklog, QueueInspector
from app.db import libpq_dsn
from app.keys import (
    DISPATCH_ACTORS,
    DISPATCH_STEP,
    QUEUE_DISPATCH,
    QUEUE_NOTIFICATIONS,
    TOKENS_CLEANUP,
    actors_sql,
)
from app.outbox import add_job
from app.settings import Settings
from models import Job
from tests.integration.workers_support import db_fixture
from workers.scale_policy import Load

__all__ = ["db_fixture"]


def test_due_and_running_batch_jobs_count_as_the_queues_depth(
    db: sessionmaker[Session], settings: Settings,
) -> None:
    # Given a ledger holding only: 5 rounds due for a minute, one being run, one due only later, and
    # a job of another kind
    with db.begin() as session:
        session.execute(delete(Job))  # what earlier tests of this run left
        for i in range(7):
            add_job(session, DISPATCH_STEP, f"ride-{i}", 0)
        add_job(session, TOKENS_CLEANUP)
        session.execute(update(Job).where(Job.actor == "dispatch.step")
                        .values(due_at=datetime.now(UTC) - timedelta(seconds=60)))
        session.execute(update(Job).where(Job.args[0].astext == "ride-5").values(state="handed"))
        session.execute(update(Job).where(Job.args[0].astext == "ride-6")
                        .values(due_at=datetime.now(UTC) + timedelta(minutes=3)))
    backlog = LedgerBacklog(libpq_dsn(settings.db.url), actors_sql(DISPATCH_ACTORS))
    client = redis.Redis.from_url(settings.redis.url)
    try:
        # When the autoscaler reads the queues
        inspector = QueueInspector(client, settings.redis.dramatiq_namespace, heartbeat_timeout_s=5,
                                   queues=(QUEUE_DISPATCH, QUEUE_NOTIFICATIONS), ledger=backlog)
        snapshot = inspector.snapshot()
    finally:
        backlog.close()
        client.close()

    # Then the dispatch queue is 6 deep and a minute old, with nothing of it in Redis
    dispatch = snapshot.queue(QUEUE_DISPATCH)
    assert (dispatch.ready, dispatch.in_ledger) == (0, 6)
    assert 55 <= dispatch.oldest_ready_age_s <= 600
    assert snapshot.queue(QUEUE_NOTIFICATIONS).in_ledger == 0
    assert Load.of(snapshot, workers=1).ready == 6


def test_an_unreachable_postgresql_is_an_error_the_autoscaler_sees() -> None:
    backlog = LedgerBacklog("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
                            actors_sql(DISPATCH_ACTORS))
    with pytest.raises(psycopg.OperationalError):
        backlog.read()
