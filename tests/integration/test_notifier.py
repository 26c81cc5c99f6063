"""The notification sender: `notifications.send` in batches (real PostgreSQL, the real twilio SDK
against the local Twilio fake). Each test drives the sender batch by batch, as its thread does."""

from __future__ import annotations

import dataclasses
import types
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.keys import NOTIFICATIONS_SEND
from app.outbox import add_job
from app.settings import Settings
from models import Job, NotificationRequest
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.market_support import Person, customer, market
from tests.integration.test_notifications import PHONE, fake_twilio, note, twilio_settings, write
from tests.integration.workers_support import db_fixture
from workers.notifier import Notifier

__all__ = ["customer", "db_fixture", "fake_twilio", "market", "twilio_settings"]


def sender(db: sessionmaker[Session], settings: Settings, *, concurrency: int = 8) -> Notifier:
    settings = dataclasses.replace(settings, notifications=dataclasses.replace(
        settings.notifications, send_concurrency=concurrency))
    resources = types.SimpleNamespace(sessions=db, settings=settings)
    return Notifier(settings, resources=resources,
                    actor_options=lambda actor: {"max_retries": 20, "min_backoff": 1000})


def queued(db: sessionmaker[Session], settings: Settings, person: Person, count: int,
           cause: str = "batch") -> list[uuid.UUID]:
    """`count` notifications written as the services write them (each with its send job)."""
    return [write(db, person.id, settings.twilio, key=f"{cause}:{i}") for i in range(count)]


def jobs_of(db: sessionmaker[Session], notification_id: uuid.UUID) -> list[Job]:
    with db() as session:
        return list(session.scalars(select(Job).where(Job.actor == "notifications.send",
                                                      Job.args[0].astext == str(notification_id))))


def test_a_batch_sends_every_queued_notification_once_and_records_each(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, customer: Person,
) -> None:
    ids = queued(db, twilio_settings, customer, 30)
    worker = sender(db, twilio_settings)
    try:
        assert worker.run_batch() == 30
        assert worker.run_batch() == 0
    finally:
        worker.stop()

    assert fake_twilio.calls == 30
    rows = [note(db, i) for i in ids]
    assert all(r.status == "sent" and r.provider_id and r.provider_id.startswith("SM") for r in rows)
    assert sorted(m["sid"] for m in fake_twilio.messages) == sorted(r.provider_id for r in rows)
    assert all([j.state for j in jobs_of(db, i)] == ["done"] for i in ids)


def test_a_send_job_written_twice_sends_once(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, customer: Person,
) -> None:
    [notification_id] = queued(db, twilio_settings, customer, 1)
    with db.begin() as session:  # a second job for it (the stuck-row sweep, a replay)
        add_job(session, NOTIFICATIONS_SEND, str(notification_id))
    worker = sender(db, twilio_settings)
    try:
        assert worker.run_batch() == 2
    finally:
        worker.stop()

    assert fake_twilio.calls == 1
    assert [j.state for j in jobs_of(db, notification_id)] == ["done", "done"]


def test_a_twilio_500_puts_that_one_back_for_a_retry_and_the_rest_are_sent(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, customer: Person,
) -> None:
    ids = queued(db, twilio_settings, customer, 6)
    fake_twilio.fail_next(1, status=500)
    worker = sender(db, twilio_settings)
    try:
        worker.run_batch()
    finally:
        worker.stop()

    rows = [note(db, i) for i in ids]
    assert sorted(r.status for r in rows) == ["queued"] + ["sent"] * 5
    [again] = [r for r in rows if r.status == "queued"]
    [job] = jobs_of(db, again.id)
    assert (job.state, job.attempts) == ("waiting", 1) and job.due_at > datetime.now(UTC)
    assert again.attempts == 1 and again.error_code


def test_a_permanent_refusal_fails_the_notification_without_a_retry(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, customer: Person,
) -> None:
    ids = queued(db, twilio_settings, customer, 3)
    fake_twilio.reject_numbers([PHONE])
    worker = sender(db, twilio_settings)
    try:
        worker.run_batch()
    finally:
        worker.stop()

    assert [note(db, i).status for i in ids] == ["failed"] * 3
    assert all([j.state for j in jobs_of(db, i)] == ["done"] for i in ids)


def test_while_twilios_circuit_is_open_the_jobs_wait_without_spending_an_attempt(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, customer: Person,
) -> None:
    # Given Twilio failing long enough to open the circuit
    settings = dataclasses.replace(twilio_settings, twilio=dataclasses.replace(
        twilio_settings.twilio, circuit_failures=2, circuit_pause_s=30.0))
    queued(db, settings, customer, 2)
    fake_twilio.fail_next(100, status=503)
    worker = sender(db, settings)
    try:
        worker.run_batch()
        calls = fake_twilio.calls
        later = queued(db, settings, customer, 4, cause="later")
        with db.begin() as session:  # the first two are due again at once
            session.execute(update(Job).where(Job.state == "waiting").values(due_at=datetime.now(UTC)))

        # When the next batch comes
        worker.run_batch()
    finally:
        worker.stop()

    # Then nothing more went to Twilio, and the jobs wait for the pause to end, attempts unspent
    assert fake_twilio.calls == calls
    for notification_id in later:
        [job] = jobs_of(db, notification_id)
        assert (job.state, job.attempts) == ("waiting", 0) and "paused" in (job.last_error or "")
        assert note(db, notification_id).status == "queued"
    with db() as session:
        assert session.scalar(select(NotificationRequest.attempts).where(
            NotificationRequest.id == later[0])) == 0
