"""Replaying a payment job is safe: a `payments.capture` whose run reached Stripe but never committed
is replayed with `farmctl jobs replay` in a real worker, and Stripe (the local fake) still shows one
capture while the ledger balances.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import delete, select, text

import jobs
from app.adapters.stripe_gateway import StripeGateway
from app.settings import Settings, get_settings
from models import Job
from models.jobs import FailedJob
from scripts.farmctl import main
from tests.integration.payments_support import PayBench, paid_settings, pay, stripe_fake
from tests.integration.workers_support import (
    WorkerFactory,
    db_fixture,
    drain,
    start_worker_fixture,
    wait_for,
)
from workers.resources import get_resources

__all__ = ["db_fixture", "paid_settings", "pay", "start_worker_fixture", "stripe_fake"]  # fixtures

#: `payments.*` retry while `retries < 12` (jobs/payments.py): this count makes a run the last one.
LAST_RETRY = 12


@pytest.fixture
def paying_worker(start_worker: WorkerFactory, paid_settings: Settings) -> Iterator[None]:
    """A real worker whose Stripe client talks to the fake (no outbox relay: the test sends)."""
    resources = get_resources()
    resources._stripe = StripeGateway(paid_settings.stripe)
    start_worker(relay=get_settings())
    try:
        yield
    finally:
        resources._stripe = None


def commit_of_ledger_fails(pay: PayBench, ride_id: str) -> None:
    """Until dropped, any transaction writing the ride's ledger fails at COMMIT (a deferred check)."""
    with pay.market.db.begin() as session:
        session.execute(text("""
            CREATE OR REPLACE FUNCTION test_farmctl_refuse_commit() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$ LANGUAGE plpgsql"""))
        session.execute(text(f"""
            CREATE CONSTRAINT TRIGGER test_farmctl_refuse_commit AFTER INSERT ON ledger_entries
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.ride_id = '{uuid.UUID(ride_id)}'::uuid)
            EXECUTE FUNCTION test_farmctl_refuse_commit()"""))


def commits_work_again(pay: PayBench) -> None:
    with pay.market.db.begin() as session:
        session.execute(text("DROP TRIGGER IF EXISTS test_farmctl_refuse_commit ON ledger_entries"))
        session.execute(text("DROP FUNCTION IF EXISTS test_farmctl_refuse_commit()"))


async def test_replaying_a_capture_that_reached_stripe_captures_once_and_balances_the_ledger(
    pay: PayBench, paying_worker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a card ride held at Stripe and completed: its `payments.capture` is due
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver, amount=2500)
    await pay.market.walk(driver, ride_id, "COMPLETED")
    with pay.market.db.begin() as session:
        taken = session.execute(delete(Job).where(Job.actor == "payments.capture")
                                .returning(Job.args)).scalars().all()
    assert taken == [[ride_id]]

    # When the capture runs on its last retry in the worker, reaches Stripe, and its commit fails
    commit_of_ledger_fails(pay, ride_id)
    try:
        message = jobs.payments.capture.message(ride_id).copy(options={"retries": LAST_RETRY})
        jobs.broker.enqueue(message)
        failed = wait_for(lambda: _failure(pay, message.message_id), what="the capture's failure record")
        drain("payments")
    finally:
        commits_work_again(pay)
    # Then Stripe captured the money, but the farm recorded nothing of it: the job is a failed job
    capture_path = f"/v1/payment_intents/{intent_id}/capture"
    assert pay.fake.count("POST", capture_path) == 1
    assert pay.fake.payment_intents[intent_id]["status"] == "succeeded"
    assert pay.payment(ride_id).status == "authorized" and pay.ledger(ride_id) == {}
    assert failed.actor == "payments.capture" and failed.attempts == LAST_RETRY + 1
    assert "commit refused by the test" in failed.exception_message

    # When the admin replays it
    with structlog.testing.capture_logs():
        code = main(["jobs", "replay", str(failed.id)[:8], "--by", "ops"], configure_logs=False)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "replayed as message" in out

    # Then it runs again in the worker and records the capture Stripe already made: one capture at
    # Stripe, the ledger split once and equal to what Stripe holds, no new failure
    wait_for(lambda: pay.payment(ride_id).status == "captured", what="the replayed capture")
    drain("payments")
    assert pay.fake.count("POST", capture_path) == 1
    assert pay.ledger(ride_id) == {"driver_earning": 2125, "platform_commission": 375}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 2500
    with pay.market.db() as session:
        assert session.scalars(select(FailedJob.message_id)).all() == [message.message_id]
        assert session.get_one(FailedJob, failed.id).replay_count == 1


def _failure(pay: PayBench, message_id: str) -> FailedJob | None:
    with pay.market.db() as session:
        return session.scalar(select(FailedJob).where(FailedJob.message_id == message_id))
