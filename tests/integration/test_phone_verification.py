"""Phone verification by a one-time SMS code (`app.services.phone_verification`), the ride it
gates and the messages it lets through, when `PHONE_VERIFICATION_REQUIRED`. Real PostgreSQL and
Redis; Twilio is the real SDK against `FakeTwilio`, sends run through the delivery service."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.adapters.twilio_sender import senders_for
from app.services.notification_delivery import deliver
from app.settings import Settings, TwilioSettings
from models import NotificationRequest, PhoneVerification
from tests.fakes.twilio_server import FakeTwilio
from tests.integration.conftest import Accounts, AppFactory
from tests.integration.market_support import Market, Person, assert_error

SEND = "/api/v1/me/phone/verification"
VERIFY = "/api/v1/me/phone/verify"
RIDE = {"pickup": {"lat": 52.52, "lng": 13.405}, "dropoff": {"lat": 52.50, "lng": 13.42},
        "vehicleType": "van", "region": "BER", "paymentMethod": "cash"}


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def required(settings: Settings, fake_twilio: FakeTwilio) -> Settings:
    """Verification required (as in production), Twilio configured against the fake."""
    twilio = TwilioSettings(account_sid=fake_twilio.account_sid, auth_token=fake_twilio.auth_token,
                            sms_from="+15557654321", api_base=fake_twilio.base_url, timeout_s=2.0,
                            verified_numbers_only=True)
    phone = dataclasses.replace(settings.phone, verification_required=True, max_attempts=3)
    return dataclasses.replace(settings, twilio=twilio, phone=phone)


@pytest.fixture
async def market(make_client: AppFactory, required: Settings) -> AsyncIterator[Market]:
    api = await make_client(required)
    market = Market(api, Accounts(api), required)
    await market.region()
    try:
        yield market
    finally:
        market.close()


def rows(market: Market, person: Person, template: str | None = None) -> list[NotificationRequest]:
    with market.db() as session:
        query = select(NotificationRequest).where(NotificationRequest.user_id == uuid.UUID(person.id))
        if template:
            query = query.where(NotificationRequest.template == template)
        return list(session.scalars(query.order_by(NotificationRequest.created_at)))


def send_all(market: Market, settings: Settings, person: Person) -> None:
    """Run `notifications.send` for the person's queued rows, as the worker would."""
    for row in rows(market, person):
        if row.status == "queued":
            with market.db() as session:
                deliver(session, senders_for(settings.twilio), settings.twilio, settings.notifications,
                        row.id)


async def sent_code(market: Market, settings: Settings, fake: FakeTwilio, person: Person) -> str:
    """Ask for a code and read it from the SMS that reached Twilio."""
    response = await market.api.post(SEND, headers=person.headers)
    assert response.status_code == 204, response.text
    send_all(market, settings, person)
    match = re.search(r"code is (\d{6})", fake.messages[-1]["body"])
    assert match, fake.messages[-1]
    return match.group(1)


async def test_a_code_by_sms_verifies_the_phone_and_is_kept_only_hashed(
        market: Market, required: Settings, fake_twilio: FakeTwilio) -> None:
    # Given a fresh customer (unverified) asking for a code
    customer = await market.customer()
    assert (await market.accounts.me(customer.token)).json()["phoneVerified"] is False
    code = await sent_code(market, required, fake_twilio, customer)
    # Then the SMS went to its (unverified) number, and the database keeps no code in clear
    assert fake_twilio.messages[-1]["to"] == "+4917012345678"
    [note] = rows(market, customer, "phone_code")
    assert note.status == "sent" and code not in note.body and code not in str(note.params)
    with market.db() as session:
        stored = session.scalar(select(PhoneVerification.code_hash))
    assert stored is not None and code not in stored
    # When it sends the code back
    response = await market.api.post(VERIFY, json={"code": code}, headers=customer.headers)
    # Then its user is verified, also as `/me` sees it from now on
    assert response.status_code == 200, response.text
    assert response.json()["phoneVerified"] is True and response.json()["id"] == customer.id
    assert (await market.accounts.me(customer.token)).json()["phoneVerified"] is True
    # And the code is spent
    again = await market.api.post(VERIFY, json={"code": code}, headers=customer.headers)
    assert assert_error(again, 409, "CONFLICT")["reason"] == "NO_CODE_SENT"


async def test_a_wrong_code_is_refused_and_the_attempts_are_limited(
        market: Market, required: Settings, fake_twilio: FakeTwilio) -> None:
    customer = await market.customer()
    code = await sent_code(market, required, fake_twilio, customer)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    # When the customer guesses wrong (3 attempts allowed here)
    for left in (2, 1):
        response = await market.api.post(VERIFY, json={"code": wrong}, headers=customer.headers)
        details = assert_error(response, 400, "VALIDATION_ERROR")
        assert details == {"code": f"does not match ({left} attempt{'s' if left > 1 else ''} left)"}
    last = await market.api.post(VERIFY, json={"code": wrong}, headers=customer.headers)
    # Then the third wrong guess spends the code: even the right one no longer works
    assert assert_error(last, 409, "CONFLICT")["reason"] == "CODE_ATTEMPTS_EXCEEDED"
    right = await market.api.post(VERIFY, json={"code": code}, headers=customer.headers)
    assert assert_error(right, 409, "CONFLICT")["reason"] == "NO_CODE_SENT"
    assert (await market.accounts.me(customer.token)).json()["phoneVerified"] is False
    # And a malformed code is a plain validation error
    malformed = await market.api.post(VERIFY, json={"code": "12345\n"}, headers=customer.headers)
    assert "code" in assert_error(malformed, 400, "VALIDATION_ERROR")


async def test_an_expired_code_is_refused(market: Market, required: Settings,
                                          fake_twilio: FakeTwilio) -> None:
    customer = await market.customer()
    code = await sent_code(market, required, fake_twilio, customer)
    with market.db.begin() as session:  # ten minutes later
        session.execute(update(PhoneVerification).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = await market.api.post(VERIFY, json={"code": code}, headers=customer.headers)
    assert assert_error(response, 409, "CONFLICT")["reason"] == "CODE_EXPIRED"
    assert (await market.accounts.me(customer.token)).json()["phoneVerified"] is False


async def test_codes_sent_per_hour_are_limited(make_client: AppFactory, required: Settings) -> None:
    phone = dataclasses.replace(required.phone, sends_per_hour=2)
    api = await make_client(dataclasses.replace(required, phone=phone))
    session = await Accounts(api).register("customer")
    headers = {"Authorization": f"Bearer {session['accessToken']}"}
    assert [(await api.post(SEND, headers=headers)).status_code for _ in range(2)] == [204, 204]
    refused = await api.post(SEND, headers=headers)
    assert_error(refused, 429, "RATE_LIMITED")
    assert int(refused.headers["Retry-After"]) >= 1


async def test_an_unverified_customer_may_not_book_and_gets_no_sms(
        market: Market, required: Settings, fake_twilio: FakeTwilio) -> None:
    # Given a customer that never verified its phone
    customer = await market.customer()
    # When it books a ride
    refused = await market.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)
    # Then it is refused, naming why
    assert assert_error(refused, 403, "FORBIDDEN")["reason"] == "PHONE_NOT_VERIFIED"
    # And a message caused for it (a payment failure, say) is recorded as skipped, never sent
    from app.services.notifications import payment_failed
    with market.db.begin() as session:
        payment_failed(session, ride_id=uuid.uuid4(), customer_id=uuid.UUID(customer.id), amount=2500,
                       currency="EUR", failure_key="pi_1", settings=required.twilio)
    send_all(market, required, customer)
    [note] = rows(market, customer, "payment_failed")
    assert (note.status, note.error_code) == ("skipped", "PHONE_NOT_VERIFIED")
    assert fake_twilio.messages == []


async def test_a_verified_customer_books_and_is_told_by_sms(
        market: Market, required: Settings, fake_twilio: FakeTwilio) -> None:
    customer = await market.customer()
    code = await sent_code(market, required, fake_twilio, customer)
    assert (await market.api.post(VERIFY, json={"code": code}, headers=customer.headers)).status_code == 200
    # When the verified customer books (its token, issued before, works as is)
    response = await market.api.post("/api/v1/rides", json=RIDE, headers=customer.headers)
    assert response.status_code == 201, response.text
    # Then its booking confirmation is sent to its number
    send_all(market, required, customer)
    [note] = rows(market, customer, "booking_confirmed")
    assert note.status == "sent"
    assert fake_twilio.messages[-1]["body"] == note.body


async def test_without_the_requirement_a_fresh_customer_books_as_before(make_client: AppFactory,
                                                                        settings: Settings) -> None:
    # The development and test default: no verification needed, messages to every number
    assert settings.phone.verification_required is False and settings.twilio.verified_numbers_only is False
    api = await make_client(settings)
    market = Market(api, Accounts(api), settings)
    try:
        await market.region()
        customer = await market.customer()
        ride = await market.ride(customer)
        assert ride["status"] == "PENDING_BIDS"
        [note] = rows(market, customer, "booking_confirmed")
        assert note.status == "queued"
    finally:
        market.close()
