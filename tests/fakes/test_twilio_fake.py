"""The Twilio fake, exercised through the real ``twilio.rest.Client`` (no PostgreSQL, no Redis)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from tests.fakes.twilio_server import (
    TWILIO_API_BASE,
    FakeTwilio,
    RedirectingHttpClient,
    compute_signature,
)

SENDER = "+15557654321"
RIDER = "+15551230001"
CALLBACK = "https://dispatch.example.test/webhooks/twilio/status"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def client(fake: FakeTwilio) -> Client:
    return Client(
        fake.account_sid,
        fake.auth_token,
        http_client=RedirectingHttpClient(fake.base_url, timeout=2),
        environment={},
    )


def send(client: Client, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {"to": RIDER, "from_": SENDER, "body": "Your driver is 2 minutes away."}
    kwargs.update(overrides)
    return client.messages.create(**kwargs)


def test_send_sms_returns_message_instance_and_records_it(fake: FakeTwilio, client: Client) -> None:
    message = send(client, status_callback=CALLBACK)

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert (message.to, message.from_, message.body) == (RIDER, SENDER, "Your driver is 2 minutes away.")
    assert message.account_sid == fake.account_sid
    assert message.direction == "outbound-api"
    assert message.num_segments == "1"
    assert message.error_code is None and message.error_message is None
    assert isinstance(message.date_created, datetime)
    assert message.uri == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}.json"

    [recorded] = fake.messages
    assert recorded["sid"] == message.sid
    assert recorded["body"] == "Your driver is 2 minutes away."
    assert recorded["status_callback"] == CALLBACK
    assert fake.calls == 1
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert request.form["StatusCallback"] == [CALLBACK]

    fetched = client.messages(message.sid).fetch()
    assert (fetched.sid, fetched.status, fetched.to) == (message.sid, "queued", RIDER)


def test_whatsapp_send(fake: FakeTwilio, client: Client) -> None:
    message = send(client, to=f"whatsapp:{RIDER}", from_=f"whatsapp:{SENDER}", body="Ride confirmed")

    assert message.to == f"whatsapp:{RIDER}"
    assert message.from_ == f"whatsapp:{SENDER}"
    assert fake.messages[0]["to"] == f"whatsapp:{RIDER}"


def test_messaging_service_send_is_accepted(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=RIDER, messaging_service_sid="MG" + "0" * 32, body="hi")

    assert message.status == "accepted"
    assert message.messaging_service_sid == "MG" + "0" * 32
    assert message.from_ is None


def test_segments_follow_encoding(client: Client) -> None:
    assert send(client, body="a" * 161).num_segments == "2"
    assert send(client, body="\u00e9" * 160).num_segments == "1"  # GSM-7 has é
    assert send(client, body="\U0001f697" * 36).num_segments == "2"  # UCS-2: 72 code units


@pytest.mark.parametrize(
    "to", ["5551230001", "+0123", "whatsapp:5551230001", "+1555abc", "+1234567890123456"]
)
def test_invalid_to_is_21211(fake: FakeTwilio, client: Client, to: str) -> None:
    with pytest.raises(TwilioRestException) as caught:
        send(client, to=to)

    assert caught.value.status == 400
    assert caught.value.code == 21211
    assert f"The 'To' number {to} is not a valid phone number." in caught.value.msg
    assert fake.messages == []


def test_missing_body_is_21602(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=RIDER, from_=SENDER)
    assert (caught.value.status, caught.value.code) == (400, 21602)


def test_rejected_number_is_21610(fake: FakeTwilio, client: Client) -> None:
    fake.reject_numbers({RIDER})

    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert (caught.value.status, caught.value.code) == (400, 21610)
    with pytest.raises(TwilioRestException):
        send(client, to=f"whatsapp:{RIDER}", from_=f"whatsapp:{SENDER}")

    fake.reject_numbers(set())
    assert send(client).status == "queued"


def test_fail_next_then_success(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next(1)

    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert (caught.value.status, caught.value.code) == (500, 20500)
    assert fake.messages == []

    assert send(client).status == "queued"
    assert fake.calls == 2
    assert len(fake.messages) == 1


def test_fail_next_many_with_custom_status(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next(2, status=429, code=20429)

    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            send(client)
        assert (caught.value.status, caught.value.code) == (429, 20429)
    assert send(client).sid


def test_wrong_auth_token_is_401(fake: FakeTwilio) -> None:
    client = fake.client(timeout=2, auth_token="not-the-token")

    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert fake.messages == []


def test_error_body_has_twilio_shape(fake: FakeTwilio) -> None:
    url = f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    credentials = base64.b64encode(f"{fake.account_sid}:wrong".encode()).decode()
    request = urllib.request.Request(
        url, data=b"To=%2B15551230001", headers={"Authorization": f"Basic {credentials}"}
    )

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=2)
    assert caught.value.code == 401
    assert json.loads(caught.value.read()) == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_unknown_message_is_404(client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages("SM" + "f" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_timeout_raises_requests_read_timeout(fake: FakeTwilio) -> None:
    client = fake.client(timeout=0.2)
    fake.slow(1.0)

    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout) as caught:
        send(client)
    assert time.monotonic() - started < 0.9
    # The SDK does not wrap transport errors: a timeout is a requests exception, not a Twilio one.
    assert isinstance(caught.value, requests.exceptions.Timeout)
    assert not isinstance(caught.value, TwilioException)

    fake.slow(0)
    assert send(client).status == "queued"


def test_signed_status_callback_passes_request_validator(fake: FakeTwilio, client: Client) -> None:
    message = send(client, status_callback=CALLBACK)

    params, signature = fake.status_callback(message.sid, "delivered", CALLBACK, fake.auth_token)

    assert params["MessageSid"] == message.sid
    assert params["MessageStatus"] == "delivered"
    assert params["AccountSid"] == fake.account_sid
    assert (params["To"], params["From"]) == (RIDER, SENDER)
    assert "ErrorCode" not in params
    validator = RequestValidator(fake.auth_token)
    assert validator.validate(CALLBACK, params, signature)
    assert validator.compute_signature(CALLBACK, params) == signature
    assert not validator.validate(CALLBACK, {**params, "MessageStatus": "failed"}, signature)
    assert not validator.validate(CALLBACK + "?x=1", params, signature)
    assert not validator.validate(CALLBACK.replace("dispatch.", "evil."), params, signature)
    assert not RequestValidator("other-token").validate(CALLBACK, params, signature)

    assert client.messages(message.sid).fetch().status == "delivered"


def test_failed_status_callback_carries_error_code(fake: FakeTwilio, client: Client) -> None:
    message = send(client)
    url = "https://dispatch.example.test:8443/webhooks/twilio/status?attempt=1"

    params, signature = fake.status_callback(
        message.sid, "undelivered", url, fake.auth_token, extra={"ChannelToAddress": RIDER}, error_code=30003
    )

    assert params["ErrorCode"] == "30003"
    assert params["ChannelToAddress"] == RIDER
    assert RequestValidator(fake.auth_token).validate(url, params, signature)
    assert fake.message(message.sid)["error_code"] == 30003


def test_compute_signature_matches_twilio_docs_example() -> None:
    # The worked example from Twilio's "Webhooks security" documentation.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert compute_signature(url, params, "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_redirecting_client_rewrites_only_api_twilio_com() -> None:
    http = RedirectingHttpClient("http://127.0.0.1:9/twilio/")

    assert http.rewrite(f"{TWILIO_API_BASE}/2010-04-01/Accounts/AC1/Messages.json") == (
        "http://127.0.0.1:9/twilio/2010-04-01/Accounts/AC1/Messages.json"
    )
    assert http.rewrite("https://api.twilio.com.evil.test/x") == "https://api.twilio.com.evil.test/x"
    assert http.rewrite("https://lookups.twilio.com/v2/PhoneNumbers/x") == (
        "https://lookups.twilio.com/v2/PhoneNumbers/x"
    )
    assert RedirectingHttpClient("").rewrite(f"{TWILIO_API_BASE}/x") == f"{TWILIO_API_BASE}/x"


def test_reset_and_restart(fake: FakeTwilio, client: Client) -> None:
    send(client)
    fake.fail_next(3)
    fake.reset()
    assert (fake.messages, fake.calls) == ([], 0)
    assert send(client).status == "queued"

    fake.stop()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
