"""Notifications: written with their cause, sent once, retried, failed for good, updated by Twilio.

Real PostgreSQL and Redis. Rows come from the real flows (HTTP API, dispatch service); sending
runs in a real Dramatiq worker in this process (with its outbox relay) or through the delivery
service called directly where a test needs to control each attempt. Twilio is the real `twilio`
SDK against `FakeTwilio` (tests/fakes/twilio_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import redis
import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.adapters.twilio_sender import senders_for
from app.errors import ProviderError
from app.keys import QUEUE_NOTIFICATIONS
from app.services import dispatch
from app.services.notification_delivery import Delivery, deliver, requeue_stuck
from app.services.notifications import payment_failed, short_ride
from app.settings import NotificationSettings, Settings, TwilioSettings
from models import FailedJob, Job, NotificationRequest, Ride, Role, User
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.conftest import Accounts, AppFactory, Client, bearer, error_code
from tests.integration.market_support import Market, Person, customer, market
from tests.integration.rides_support import ensure_region, ride_body
from tests.integration.workers_support import (
    WorkerFactory,
    broker_redis_fixture,
    db_fixture,
    drain,
    run_worker_until,
    side_broker,
    start_worker_fixture,
)
from workers.resources import get_resources

__all__ = ["broker_redis_fixture", "customer", "db_fixture", "market", "start_worker_fixture"]

T = TypeVar("T")

PHONE = "+4917012345678"  # every account the test helpers register has this number
SMS_FROM = "+15557654321"
WHATSAPP_FROM = "+15557654322"
CALLBACK = "https://farm.example.test/webhooks/twilio/status"
WEBHOOK = "/webhooks/twilio/status"


async def eventually(check: Callable[[], T], *, what: str, within_s: float = 15.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def notes(db: sessionmaker[Session], *where: Any) -> list[NotificationRequest]:
    with db() as session:
        return list(session.scalars(select(NotificationRequest).where(*where)
                                    .order_by(NotificationRequest.created_at)))


def note(db: sessionmaker[Session], notification_id: uuid.UUID) -> NotificationRequest:
    with db() as session:
        return session.get_one(NotificationRequest, notification_id)


def write(db: sessionmaker[Session], user_id: str, settings: TwilioSettings | None,
          key: str = "test:1") -> uuid.UUID:
    """A payment-failed notification for the user (the function payments calls), committed."""
    with db.begin() as session:
        payment_failed(session, ride_id=uuid.uuid5(uuid.NAMESPACE_URL, key), customer_id=uuid.UUID(user_id),
                       amount=2500,
                       currency="EUR", failure_key=key, settings=settings)
    [row] = notes(db, NotificationRequest.user_id == uuid.UUID(user_id),
                  NotificationRequest.dedupe_key.endswith(key))
    return row.id


def send_now(db: sessionmaker[Session], settings: Settings, notification_id: uuid.UUID,
             notifications: NotificationSettings | None = None) -> Delivery:
    """One `notifications.send` run, as the job runs it, in this thread."""
    with db() as session:
        return deliver(session, senders_for(settings.twilio), settings.twilio,
                       notifications or settings.notifications, notification_id)


@contextlib.contextmanager
def info_events() -> Iterator[list[dict[str, Any]]]:
    """Structured events at INFO and above while the block runs, whatever level a test before set."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as events:
            yield events
    finally:
        structlog.configure(**saved)


def all_acked(client: redis.Redis, settings: Settings, queue: str) -> bool:
    """Every message of `queue` has been processed and acknowledged (Dramatiq drops it on ack)."""
    namespace = settings.redis.dramatiq_namespace
    return client.hlen(f"{namespace}:{queue}.msgs") + client.hlen(f"{namespace}:{queue}.DQ.msgs") == 0


def callback_path(url: str) -> str:
    """The path and query Twilio requests for a status callback URL we gave it."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def twilio_settings(settings: Settings, fake_twilio: FakeTwilio) -> Settings:
    """The run's settings with Twilio configured against the fake."""
    return dataclasses.replace(settings, twilio=TwilioSettings(
        account_sid=fake_twilio.account_sid, auth_token=fake_twilio.auth_token, sms_from=SMS_FROM,
        whatsapp_from=WHATSAPP_FROM, api_base=fake_twilio.base_url, status_callback_url=CALLBACK,
        timeout_s=2.0))


@pytest.fixture
def twilio_worker(start_worker: WorkerFactory, twilio_settings: Settings) -> Iterator[Callable[[], None]]:
    """Starts (when called) a worker, with its outbox relay, whose jobs see Twilio configured."""
    resources = get_resources()
    saved = resources.settings

    def start() -> None:
        resources.settings = twilio_settings
        start_worker(relay=twilio_settings, threads=4)

    try:
        yield start
    finally:
        resources.settings = saved


@pytest.fixture
async def twilio_api(make_client: AppFactory, twilio_settings: Settings) -> Client:
    """An app (a web process) configured with Twilio: it verifies callbacks with the fake's token."""
    return await make_client(twilio_settings)


# --- every template, from the flow that causes it ------------------------------------------------------
async def test_every_template_is_written_by_the_flow_that_causes_it_with_its_send_job(
    market: Market, customer: Person, db: sessionmaker[Session], settings: Settings
) -> None:
    drivers = [await market.driver() for _ in range(3)]
    admin = await market.admin()

    # A ride is booked, a driver bids, the bid window closes, the customer accepts, the driver drives
    ride = await market.ride(customer)
    bid = await market.offered_bid(drivers[0], ride["id"], amount=2500, eta_minutes=7)
    check_round(db, settings, ride["id"], 0)
    response = await market.accept(customer, ride["id"], bid["id"])
    assert response.status_code == 200, response.text
    await market.walk(drivers[0], ride["id"], until="COMPLETED")
    # A ride nobody bids on runs out of rounds
    lonely = await market.ride(customer)
    check_round(db, settings, lonely["id"], len(settings.dispatch.radii_km) - 1)
    # The customer cancels one assigned ride, an admin another
    by_customer = await market.assigned_ride(customer, drivers[1])
    assert (await market.cancel(customer, by_customer["id"], "Plans changed")).status_code == 200
    by_admin = await market.assigned_ride(customer, drivers[2])
    assert (await market.cancel(admin, by_admin["id"])).status_code == 200
    # And a payment fails (what the payments service calls)
    with db.begin() as session:
        payment_failed(session, ride_id=uuid.UUID(ride["id"]), customer_id=uuid.UUID(customer.id),
                       amount=2500, currency="EUR", failure_key="pi_123", settings=settings.twilio)

    rows = notes(db)
    told = {(r.template, str(r.user_id), r.dedupe_key.split(":")[1]) for r in rows}
    c, d0, d1, d2 = customer.id, drivers[0].id, drivers[1].id, drivers[2].id
    assert told == {
        ("booking_confirmed", c, ride["id"]), ("bids_ready", c, ride["id"]),
        ("driver_assigned", c, ride["id"]), ("bid_accepted", d0, ride["id"]),
        ("driver_arriving", c, ride["id"]), ("ride_completed", c, ride["id"]),
        ("payment_failed", c, ride["id"]),
        ("booking_confirmed", c, lonely["id"]), ("no_drivers", c, lonely["id"]),
        ("booking_confirmed", c, by_customer["id"]), ("driver_assigned", c, by_customer["id"]),
        ("bid_accepted", d1, by_customer["id"]), ("ride_cancelled", d1, by_customer["id"]),
        ("booking_confirmed", c, by_admin["id"]), ("driver_assigned", c, by_admin["id"]),
        ("bid_accepted", d2, by_admin["id"]), ("ride_cancelled", d2, by_admin["id"]),
        ("ride_cancelled", c, by_admin["id"]),
    }
    # Each is queued for the console (no Twilio here) to the user's phone, with one send job
    assert {(r.channel, r.recipient, r.status) for r in rows} == {("console", PHONE, "queued")}
    with db() as session:
        send_jobs = sorted(m.args[0] for m in session.scalars(
            select(Job).where(Job.actor == "notifications.send")))
    assert send_jobs == sorted(str(r.id) for r in rows)
    # And the bodies say what the customer needs to know
    short, bodies = short_ride(ride["id"]), {r.template: r.body for r in rows if r.dedupe_key.startswith(
        f"ride:{ride['id']}")}
    assert bodies["booking_confirmed"].startswith(f"Dispatch Farm: ride {short} is booked (van from 52.5200")
    assert f"1 bid on ride {short}, from 25.00 EUR." in bodies["bids_ready"]
    assert f"accepted ride {short} for 25.00 EUR; pickup at 52.5200, 13.4050 in about 7 min." in \
        bodies["driver_assigned"]
    assert f"your bid of 25.00 EUR for ride {short} was accepted" in bodies["bid_accepted"]
    assert "on the way to 52.5200, 13.4050" in bodies["driver_arriving"]
    assert "about 7 min" in bodies["driver_arriving"]
    assert f"ride {short} is complete" in bodies["ride_completed"] and "Fare 25.00 EUR." in \
        bodies["ride_completed"]
    assert f"payment of 25.00 EUR for ride {short} failed" in bodies["payment_failed"]
    cancelled = {str(r.user_id): r.body for r in rows if r.template == "ride_cancelled"}
    assert "cancelled by the customer. Reason: Plans changed" in cancelled[d1]
    assert cancelled[c].endswith("was cancelled by support.") and "by support" in cancelled[d2]
    assert "no driver was free" in next(r.body for r in rows if r.template == "no_drivers")
    assert all(len(r.body) <= 160 for r in rows), [r.body for r in rows if len(r.body) > 160]


def check_round(db: sessionmaker[Session], settings: Settings, ride_id: str, round_: int) -> None:
    """The end of round `round_`'s bid window, as `dispatch.check_bids` runs it."""
    with db.begin() as session:
        session.execute(update(Ride).where(Ride.id == uuid.UUID(ride_id)).values(dispatch_round=round_))
    with db.begin() as session:
        dispatch.check_bids(session, settings.dispatch, uuid.UUID(ride_id), round_,
                            after_commit=lambda _: None, emit=lambda *_: None, twilio=settings.twilio)


async def test_a_cause_seen_twice_writes_one_notification_and_one_job(
    market: Market, customer: Person, db: sessionmaker[Session], settings: Settings
) -> None:
    first = write(db, customer.id, settings.twilio, key="pi_1")
    again = write(db, customer.id, settings.twilio, key="pi_1")

    assert first == again
    with db() as session:
        jobs_for = session.scalars(select(Job.args).where(
            Job.actor == "notifications.send")).all()
    assert jobs_for == [[str(first)]]


# --- the console channel -----------------------------------------------------------------------------
async def test_without_twilio_the_message_is_logged_and_marked_sent(
    market: Market, customer: Person, db: sessionmaker[Session], settings: Settings,
    start_worker: WorkerFactory,
) -> None:
    # Given a farm without Twilio credentials and its worker
    start_worker(relay=settings)

    with info_events() as logged:
        # When the customer books a ride
        ride = await market.ride(customer)

        # Then the booking confirmation is sent to the log and marked sent
        [row] = await eventually(lambda: [r for r in notes(db) if r.status == "sent"],
                                 what="the booking confirmation to be sent")
    assert (row.template, row.channel, row.attempts) == ("booking_confirmed", "console", 1)
    assert row.provider_id and row.provider_id.startswith("CONSOLE") and row.sent_at is not None
    [event] = [e for e in logged if e["event"] == "notification.console"]
    assert event["to"] == PHONE and event["channel"] == "console"
    assert event["template"] == "booking_confirmed" and event["body"] == row.body
    assert short_ride(ride["id"]) in event["body"]


# --- Twilio ------------------------------------------------------------------------------------------
async def test_sent_through_twilio_by_sms_with_the_provider_sid(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_worker: Callable[[], None],
) -> None:
    notification_id = write(db, customer.id, twilio_settings.twilio)
    twilio_worker()

    row = await eventually(lambda: (r := note(db, notification_id)).status == "sent" and r,
                           what="the notification to be sent")

    [message] = fake_twilio.messages
    assert row.channel == "sms" and row.provider_id == message["sid"]
    assert (message["to"], message["from"], message["body"]) == (PHONE, SMS_FROM, row.body)
    assert message["status_callback"] == f"{CALLBACK}?notification={notification_id}"


async def test_a_send_job_delivered_three_times_calls_twilio_once(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_worker: Callable[[], None], broker_redis: redis.Redis,
) -> None:
    # Given a notification whose send job is delivered twice more (a redelivery, a replay)
    notification_id = write(db, customer.id, twilio_settings.twilio)
    for _ in range(2):
        jobs.notifications.send.send(str(notification_id))

    # When the worker runs all three (four threads: side by side), and a fourth after the send
    twilio_worker()
    await eventually(lambda: note(db, notification_id).status == "sent", what="the notification to be sent")
    jobs.notifications.send.send(str(notification_id))
    await eventually(lambda: all_acked(broker_redis, twilio_settings, QUEUE_NOTIFICATIONS),
                     what="all four deliveries to be processed")

    # Then Twilio was asked once, and the row was claimed once
    assert fake_twilio.calls == 1 and len(fake_twilio.messages) == 1
    assert note(db, notification_id).attempts == 1


async def test_a_twilio_500_is_retried_and_the_message_sent(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_worker: Callable[[], None],
) -> None:
    # Given Twilio answers the first request with a 500
    fake_twilio.fail_next(1, status=500, code=20500)
    notification_id = write(db, customer.id, twilio_settings.twilio)

    twilio_worker()

    # Then the job retries after its backoff and the message is sent, once
    row = await eventually(lambda: (r := note(db, notification_id)).status == "sent" and r,
                           what="the retried notification to be sent")
    assert row.attempts == 2 and row.error_code is None
    assert fake_twilio.calls == 2 and len(fake_twilio.messages) == 1
    assert row.provider_id == fake_twilio.messages[0]["sid"]


@pytest.mark.parametrize(("refusal", "code"), [
    (lambda fake: fake.fail_next(1, status=400, code=21211,
                                 message=f"The 'To' number {PHONE} is not a valid phone number."), "21211"),
    (lambda fake: fake.reject_numbers({PHONE}), "21610"),
], ids=["invalid-number", "unsubscribed"])
async def test_a_permanent_twilio_error_fails_the_notification_without_retrying(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_worker: Callable[[], None], refusal: Callable[[FakeTwilio], None],
    code: str,
) -> None:
    refusal(fake_twilio)
    notification_id = write(db, customer.id, twilio_settings.twilio)

    twilio_worker()

    row = await eventually(lambda: (r := note(db, notification_id)).status == "failed" and r,
                           what="the notification to fail")
    drain(QUEUE_NOTIFICATIONS)  # nothing is waiting to retry it
    assert (row.error_code, row.attempts) == (code, 1)
    assert row.error_message
    assert fake_twilio.calls == 1 and fake_twilio.messages == []
    with db() as session:
        assert session.scalars(select(FailedJob)).all() == []


def test_a_transient_error_on_the_last_attempt_fails_the_notification(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, clean: None,
) -> None:
    user_id = make_user(db)
    notification_id = write(db, user_id, twilio_settings.twilio)
    fake_twilio.fail_next(5, status=503, code=20503)
    two_tries = NotificationSettings(max_attempts=2)

    with pytest.raises(ProviderError) as first:
        send_now(db, twilio_settings, notification_id, two_tries)
    assert first.value.transient
    assert (note(db, notification_id).status, note(db, notification_id).error_code) == ("queued", "20503")

    assert send_now(db, twilio_settings, notification_id, two_tries).outcome == "failed"
    row = note(db, notification_id)
    assert (row.status, row.attempts, row.error_code) == ("failed", 2, "20503")


async def test_whatsapp_for_a_customer_who_opted_in_sms_for_the_others(
    twilio_api: Client, db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio,
    twilio_worker: Callable[[], None],
) -> None:
    # Given two customers of a farm with Twilio, one opted in to WhatsApp
    accounts = Accounts(twilio_api)
    await ensure_region(twilio_api)
    opted_in = await accounts.register("customer", whatsappOptIn=True)
    other = await accounts.register("customer")
    twilio_worker()

    # When both book a ride
    for who in (opted_in, other):
        response = await twilio_api.post("/api/v1/rides", json=ride_body(),
                                         headers=bearer(who["accessToken"]))
        assert response.status_code == 201, response.text

    # Then the booking confirmations go out on WhatsApp and by SMS respectively
    await eventually(lambda: len(fake_twilio.messages) == 2, what="both confirmations at Twilio")

    def both_sent() -> list[NotificationRequest]:
        rows = notes(db)
        return rows if [r.status for r in rows] == ["sent", "sent"] else []

    by_user = {str(r.user_id): r for r in await eventually(both_sent, what="both rows marked sent")}
    sent = {m["sid"]: m for m in fake_twilio.messages}
    whatsapp = sent[by_user[opted_in["user"]["id"]].provider_id]
    sms = sent[by_user[other["user"]["id"]].provider_id]
    assert by_user[opted_in["user"]["id"]].channel == "whatsapp"
    assert (whatsapp["to"], whatsapp["from"]) == (f"whatsapp:{PHONE}", f"whatsapp:{WHATSAPP_FROM}")
    assert by_user[other["user"]["id"]].channel == "sms"
    assert (sms["to"], sms["from"]) == (PHONE, SMS_FROM)


# --- status callbacks --------------------------------------------------------------------------------
async def sent_by_twilio(db: sessionmaker[Session], twilio_settings: Settings, user_id: str) -> tuple[
        uuid.UUID, str]:
    notification_id = write(db, user_id, twilio_settings.twilio)
    delivery = send_now(db, twilio_settings, notification_id)
    assert delivery.outcome == "sent" and delivery.provider_id
    return notification_id, delivery.provider_id


async def post_callback(client: Client, fake: FakeTwilio, sid: str, status: str, *,
                        auth_token: str | None = None, error_code: int | None = None) -> Any:
    url = fake.message(sid)["status_callback"]
    params, signature = fake.status_callback(sid, status, url, auth_token, error_code=error_code)
    return await client.post(callback_path(url), data=params, headers={"X-Twilio-Signature": signature})


async def test_a_signed_callback_marks_delivered_and_a_late_sent_does_not_undo_it(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_api: Client,
) -> None:
    notification_id, sid = await sent_by_twilio(db, twilio_settings, customer.id)

    # When Twilio reports the message delivered
    response = await post_callback(twilio_api, fake_twilio, sid, "delivered")

    # Then the notification is delivered
    assert response.status_code == 204, response.text
    assert note(db, notification_id).status == "delivered"

    # And a 'sent' (or 'undelivered') callback arriving late changes nothing
    for late in ("sent", "undelivered"):
        assert (await post_callback(twilio_api, fake_twilio, sid, late, error_code=30003)).status_code == 204
    row = note(db, notification_id)
    assert (row.status, row.provider_id) == ("delivered", sid)


async def test_an_undelivered_callback_keeps_the_carriers_error_code(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_api: Client,
) -> None:
    notification_id, sid = await sent_by_twilio(db, twilio_settings, customer.id)

    response = await post_callback(twilio_api, fake_twilio, sid, "undelivered", error_code=30003)

    assert response.status_code == 204
    row = note(db, notification_id)
    assert (row.status, row.error_code) == ("undelivered", "30003")


async def test_a_forged_or_unsigned_callback_is_refused_and_changes_nothing(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_api: Client, api: Client,
) -> None:
    notification_id, sid = await sent_by_twilio(db, twilio_settings, customer.id)
    url = fake_twilio.message(sid)["status_callback"]
    params, good = fake_twilio.status_callback(sid, "delivered", url)
    _, forged = fake_twilio.status_callback(sid, "delivered", url, auth_token="not-the-token")

    attempts = [
        (twilio_api, {"X-Twilio-Signature": forged}, params),          # signed with another token
        (twilio_api, {}, params),                                      # not signed
        (twilio_api, {"X-Twilio-Signature": good}, {**params, "MessageStatus": "failed"}),  # altered
        (api, {"X-Twilio-Signature": good}, params),                   # a farm without Twilio
    ]
    for client, headers, body in attempts:
        response = await client.post(callback_path(url), data=body, headers=headers)
        assert response.status_code == 403, response.text
        assert error_code(response) == "INVALID_SIGNATURE"
    assert note(db, notification_id).status == "sent"


@pytest.mark.parametrize("path", ["/api/v1/webhooks/twilio/status", "/webhooks/twilio/status"],
                         ids=["api-v1", "root-alias"])
async def test_callbacks_are_verified_at_the_contract_path_and_at_the_root_alias(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, make_client: AppFactory, path: str,
) -> None:
    # Given a farm whose TWILIO_STATUS_CALLBACK_URL is the public URL of `path`, and a message sent
    public = f"https://farm.example.test{path}"
    configured = dataclasses.replace(twilio_settings, twilio=dataclasses.replace(
        twilio_settings.twilio, status_callback_url=public))
    client = await make_client(configured)
    notification_id, sid = await sent_by_twilio(db, configured, customer.id)
    url = fake_twilio.message(sid)["status_callback"]
    assert urlsplit(url).path == path
    params, good = fake_twilio.status_callback(sid, "delivered", url)
    _, forged = fake_twilio.status_callback(sid, "delivered", url, auth_token="not-the-token")

    # When Twilio's callback arrives there with a wrong signature, then with its own
    refused = await client.post(callback_path(url), data=params, headers={"X-Twilio-Signature": forged})
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "INVALID_SIGNATURE"
    assert note(db, notification_id).status == "sent"
    taken = await client.post(callback_path(url), data=params, headers={"X-Twilio-Signature": good})

    # Then only the signed one counts
    assert taken.status_code == 204, taken.text
    assert note(db, notification_id).status == "delivered"


async def test_a_callback_for_an_unknown_message_is_acknowledged(
    twilio_api: Client, fake_twilio: FakeTwilio,
) -> None:
    params, signature = fake_twilio.status_callback("SM" + "0" * 32, "delivered", CALLBACK)

    response = await twilio_api.post(WEBHOOK, data=params, headers={"X-Twilio-Signature": signature})

    assert response.status_code == 204


async def test_a_timed_out_send_that_twilio_accepted_is_not_sent_again_once_its_callback_came(
    market: Market, customer: Person, db: sessionmaker[Session], twilio_settings: Settings,
    fake_twilio: FakeTwilio, twilio_api: Client,
) -> None:
    # Given Twilio takes the message but answers after our timeout
    impatient = dataclasses.replace(twilio_settings, twilio=dataclasses.replace(twilio_settings.twilio,
                                                                                timeout_s=0.3))
    notification_id = write(db, customer.id, impatient.twilio)
    fake_twilio.slow(0.8)
    with pytest.raises(ProviderError) as timed_out:
        send_now(db, impatient, notification_id)
    assert timed_out.value.transient and note(db, notification_id).error_code == "TIMEOUT"
    [message] = await eventually(lambda: fake_twilio.messages, what="Twilio to store the message")
    fake_twilio.slow(0)

    # When its 'sent' callback arrives (found by our id on the callback URL) before the retry
    assert (await post_callback(twilio_api, fake_twilio, message["sid"], "sent")).status_code == 204

    # Then the retry sends nothing
    assert send_now(db, impatient, notification_id).outcome == "skipped"
    row = note(db, notification_id)
    assert (row.status, row.provider_id, fake_twilio.calls) == ("sent", message["sid"], 1)


# --- nothing stranded --------------------------------------------------------------------------------
def test_a_notification_whose_job_was_lost_or_whose_sender_crashed_is_sent_again(
    db: sessionmaker[Session], settings: Settings, clean: None,
) -> None:
    # Given a queued notification whose job was lost (Redis restarted empty) long ago
    lost = write(db, make_user(db), settings.twilio, key="lost")
    # And one claimed by a worker that crashed: 'sending' with its lease lapsed
    crashed = write(db, make_user(db), settings.twilio, key="crashed")
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.notifications.stuck_after_s + 60)
    with db.begin() as session:
        session.execute(delete(Job))
        session.execute(update(NotificationRequest).where(NotificationRequest.id == lost)
                        .values(updated_at=long_ago))
        session.execute(update(NotificationRequest).where(NotificationRequest.id == crashed)
                        .values(status="sending", attempts=1, updated_at=long_ago,
                                lease_until=long_ago + timedelta(seconds=settings.notifications.lease_s)))

    # When the sweep runs (twice: the clock may send it again)
    with db.begin() as session:
        assert requeue_stuck(session, settings.notifications) == 2
    with db.begin() as session:
        assert requeue_stuck(session, settings.notifications) == 0

    # Then each has one send job again, and sending takes the crashed worker's row over
    with db() as session:
        requeued = sorted(session.scalars(select(Job.args)).all())
    assert requeued == sorted([[str(lost)], [str(crashed)]])
    assert send_now(db, settings, crashed).outcome == "sent"
    assert note(db, crashed).attempts == 2


def test_the_sweep_looks_only_at_stuck_rows_and_reaches_every_one_over_its_runs(
    db: sessionmaker[Session], settings: Settings, clean: None,
) -> None:
    # Given old rows that are done (sent, delivered, failed) and three stuck ones, all long untouched
    user = make_user(db)
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.notifications.stuck_after_s + 600)
    done = [write(db, user, settings.twilio, key=f"done-{n}") for n in range(6)]
    stuck = [write(db, user, settings.twilio, key=f"stuck-{n}") for n in range(3)]
    with db.begin() as session:
        session.execute(delete(Job))
        for n, notification_id in enumerate(done):  # older than every stuck row
            session.execute(update(NotificationRequest).where(NotificationRequest.id == notification_id)
                            .values(status=("sent", "delivered", "failed")[n % 3],
                                    updated_at=long_ago - timedelta(minutes=10)))
        for n, notification_id in enumerate(stuck):
            session.execute(update(NotificationRequest).where(NotificationRequest.id == notification_id)
                            .values(updated_at=long_ago + timedelta(seconds=n)))

    # When the sweep runs with room for two rows per run
    with db.begin() as session:
        first = requeue_stuck(session, settings.notifications, limit=2)
    with db() as session:
        first_jobs = sorted(session.scalars(select(Job.args)).all())
    with db.begin() as session:
        second = requeue_stuck(session, settings.notifications, limit=2)

    # Then the done rows never take a place: the two oldest stuck rows go first, the third next
    assert (first, second) == (2, 1)
    assert first_jobs == sorted([[str(stuck[0])], [str(stuck[1])]])
    with db() as session:
        requeued = sorted(session.scalars(select(Job.args)).all())
    assert requeued == sorted([[str(n)] for n in stuck])


def make_user(db: sessionmaker[Session]) -> str:
    user_id = uuid.uuid4()
    with db.begin() as session:
        session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", full_name="T",
                         phone=PHONE, role=Role.CUSTOMER))
    return str(user_id)


def test_a_send_handed_over_before_redis_restarted_empty_reaches_twilio_once(
    db: sessionmaker[Session], twilio_settings: Settings, fake_twilio: FakeTwilio, clean: None,
    redis_server: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.relay import LedgerRelay, build_message

    monkeypatch.setattr(get_resources(), "settings", twilio_settings)
    broker = side_broker(twilio_settings, redis_server.url, "notifications.send")
    relay = LedgerRelay(broker, twilio_settings, sessions=db)
    try:
        # Given a notification whose send job was handed to Redis
        notification_id = write(db, make_user(db), twilio_settings.twilio)
        relay.drain()
        # When Redis restarts empty, the job is handed over again, and Redis then holds it twice
        redis_server.kill()
        redis_server.start()
        relay.drain()
        with db() as session:
            job_row = session.scalars(select(Job).where(Job.actor == "notifications.send")).one()
        broker.enqueue(build_message(job_row))
        # Then a worker sends it: Twilio got the message once, and the job is done
        run_worker_until(broker, lambda: note(db, notification_id).status == "sent"
                         and broker.client.hlen(f"{broker.namespace}:{QUEUE_NOTIFICATIONS}.msgs") == 0,
                         what="the message to be sent and both deliveries acked",
                         queues={QUEUE_NOTIFICATIONS})
        assert len(fake_twilio.messages) == 1
        with db() as session:
            assert session.scalar(select(Job.state).where(Job.id == job_row.id)) == "done"
    finally:
        broker.client.close()
