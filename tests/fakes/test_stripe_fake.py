"""The Stripe fake, driven by the real ``stripe`` SDK (no PostgreSQL or Redis needed)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from tests.fakes.stripe_server import (
    FakeStripe,
    charge_dispute_event,
    parse_form,
    sign_payload,
    signed_webhook,
)

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture(autouse=True)
def _no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK sleeps at least ``INITIAL_DELAY`` (0.5 s) between retries; tests don't wait."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.0)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStripe]:
    with FakeStripe() as running:
        yield running


@pytest.fixture
def fake(server: FakeStripe) -> FakeStripe:
    """The module's fake, emptied for each test."""
    server.reset()
    return server


def make_client(fake: FakeStripe, *, retries: int = 0, api_key: str | None = None) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key or fake.api_key,
        base_addresses={"api": fake.base_url, "connect": fake.base_url},
        max_network_retries=retries,
    )


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return make_client(fake)


@pytest.fixture
def driver(fake: FakeStripe) -> str:
    """A connected account that finished onboarding."""
    return str(fake.seed_account(email="driver@example.com")["id"])


def authorize(
    client: stripe.StripeClient, driver: str, amount: int = 2500, **extra: Any
) -> stripe.PaymentIntent:
    params: Any = {
        "amount": amount,
        "currency": "usd",
        "capture_method": "manual",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "transfer_data": {"destination": driver},
        "application_fee_amount": 500,
        "metadata": {"ride_id": "42"},
        **extra,
    }
    return client.v1.payment_intents.create(params)


def test_parse_form_nests_brackets_and_lists() -> None:
    pairs = [
        ("metadata[ride_id]", "7"),
        ("metadata[0]", "x"),
        ("capabilities[transfers][requested]", "true"),
        ("expand[0]", "latest_charge"),
        ("expand[1]", "customer"),
        ("amount", "100"),
    ]
    assert parse_form(pairs) == {
        "metadata": {"ride_id": "7", "0": "x"},
        "capabilities": {"transfers": {"requested": "true"}},
        "expand": ["latest_charge", "customer"],
        "amount": "100",
    }


def test_express_account_and_onboarding_link(fake: FakeStripe, client: stripe.StripeClient) -> None:
    account = client.v1.accounts.create(
        {
            "type": "express",
            "email": "driver@example.com",
            "country": "US",
            "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
            "metadata": {"driver_id": "d-1"},
        }
    )
    assert account.id.startswith("acct_")
    assert (account.charges_enabled, account.payouts_enabled, account.details_submitted) == (
        False,
        False,
        False,
    )
    assert account.to_dict()["metadata"] == {"driver_id": "d-1"}
    assert fake.accounts[account.id]["email"] == "driver@example.com"

    link = client.v1.account_links.create(
        {
            "account": account.id,
            "refresh_url": "https://app.example/onboarding/refresh",
            "return_url": "https://app.example/onboarding/done",
            "type": "account_onboarding",
        }
    )
    assert link.object == "account_link"
    assert link.expires_at > link.created

    # Visiting the hosted page completes onboarding and sends the driver back to return_url.
    url = urlsplit(link.url)
    conn = http.client.HTTPConnection(url.netloc, timeout=2)
    conn.request("GET", url.path)
    response = conn.getresponse()
    assert (response.status, response.getheader("Location")) == (302, "https://app.example/onboarding/done")
    conn.close()

    refreshed = client.v1.accounts.retrieve(account.id)
    assert refreshed.charges_enabled and refreshed.payouts_enabled and refreshed.details_submitted
    assert refreshed.capabilities is not None and refreshed.capabilities.transfers == "active"
    (event,) = fake.events_of_type("account.updated")
    assert event["account"] == account.id
    assert event["data"]["previous_attributes"]["charges_enabled"] is False


def test_set_account_returns_account_updated_event(fake: FakeStripe, client: stripe.StripeClient) -> None:
    account = client.v1.accounts.create({"type": "express", "email": "d@example.com"})
    event = fake.set_account(account.id, details_submitted=True, charges_enabled=True)
    assert event["type"] == "account.updated" and event["object"] == "event"
    assert event["data"]["object"]["charges_enabled"] is True
    assert client.v1.events.retrieve(event["id"]).data.object.id == account.id
    assert client.v1.accounts.retrieve(account.id).payouts_enabled is False


def test_destination_must_be_onboarded(fake: FakeStripe, client: stripe.StripeClient) -> None:
    pending = client.v1.accounts.create({"type": "express"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        authorize(client, pending.id)
    assert raised.value.code == "insufficient_capabilities_for_transfer"
    assert fake.count("POST", "/v1/payment_intents") == 0


def test_manual_capture_flow(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    created = client.v1.payment_intents.create(
        {
            "amount": 2500,
            "currency": "usd",
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
            "transfer_data": {"destination": driver},
            "application_fee_amount": 500,
            "metadata": {"ride_id": "42"},
        }
    )
    assert created.status == "requires_confirmation"
    assert str(created.client_secret).startswith(created.id + "_secret_")

    confirmed = client.v1.payment_intents.confirm(created.id)
    assert (confirmed.status, confirmed.amount_capturable, confirmed.amount_received) == (
        "requires_capture",
        2500,
        0,
    )
    assert confirmed.latest_charge is not None

    captured = client.v1.payment_intents.capture(created.id, {"amount_to_capture": 2000})
    assert (captured.status, captured.amount_capturable, captured.amount_received) == ("succeeded", 0, 2000)

    charge = client.v1.charges.retrieve(str(captured.latest_charge))
    # As on Stripe, the uncaptured remainder of a partial capture is released as a refund.
    assert (charge.captured, charge.amount_captured, charge.amount_refunded) == (True, 2000, 500)
    assert charge.transfer is not None and charge.application_fee_amount == 500
    assert charge.metadata["ride_id"] == "42"

    expanded = client.v1.payment_intents.retrieve(created.id, {"expand": ["latest_charge"]})
    assert isinstance(expanded.latest_charge, stripe.Charge)
    assert expanded.latest_charge.amount_captured == 2000

    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_intents.capture(created.id)
    assert raised.value.code == "payment_intent_unexpected_state"
    assert raised.value.http_status == 400

    assert [e["type"] for e in fake.events] == [
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
    ]
    assert fake.events[-1]["data"]["object"]["amount_received"] == 2000


def test_capture_requires_authorization_and_bounds(client: stripe.StripeClient, driver: str) -> None:
    unpaid = client.v1.payment_intents.create({"amount": 1000, "currency": "usd", "capture_method": "manual"})
    assert unpaid.status == "requires_payment_method"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_intents.capture(unpaid.id)
    assert raised.value.code == "payment_intent_unexpected_state"

    pi = authorize(client, driver)
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 99999})
    assert too_much.value.code == "amount_too_large"


def test_cancel(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    pi = authorize(client, driver)
    assert pi.status == "requires_capture"
    canceled = client.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "requested_by_customer"})
    assert (canceled.status, canceled.cancellation_reason, canceled.amount_capturable) == (
        "canceled",
        "requested_by_customer",
        0,
    )
    assert fake.payment_intents[pi.id]["status"] == "canceled"
    assert fake.events_of_type("payment_intent.canceled")[0]["data"]["object"]["id"] == pi.id
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_intents.cancel(pi.id)
    assert raised.value.code == "payment_intent_unexpected_state"


def test_partial_then_full_refund(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    pi = authorize(client, driver)
    client.v1.payment_intents.capture(pi.id)

    first = client.v1.refunds.create(
        {
            "payment_intent": pi.id,
            "amount": 1000,
            "reason": "requested_by_customer",
            "reverse_transfer": True,
            "refund_application_fee": True,
            "metadata": {"ride_id": "42"},
        }
    )
    assert (first.object, first.status, first.amount, first.payment_intent) == (
        "refund",
        "succeeded",
        1000,
        pi.id,
    )
    assert first.transfer_reversal is not None
    charge_id = str(first.charge)
    charge = client.v1.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (1000, False)

    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 2000})
    assert too_large.value.code == "amount_too_large"

    rest = client.v1.refunds.create({"charge": charge_id})
    assert rest.amount == 1500
    charge = client.v1.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (2500, True)

    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"payment_intent": pi.id})
    assert again.value.code == "charge_already_refunded"
    assert set(fake.refunds) == {first.id, rest.id}
    assert [e["data"]["object"]["amount_refunded"] for e in fake.events_of_type("charge.refunded")] == [
        1000,
        2500,
    ]


def test_refund_of_uncaptured_payment_is_refused(client: stripe.StripeClient, driver: str) -> None:
    pi = authorize(client, driver)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create({"payment_intent": pi.id})
    assert raised.value.code == "payment_intent_unexpected_state"


def test_declined_card(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    with pytest.raises(stripe.CardError) as raised:
        authorize(client, driver, payment_method="pm_card_chargeDeclinedInsufficientFunds")
    error = raised.value
    assert (error.http_status, error.code) == (402, "card_declined")
    assert error.error is not None and error.error.decline_code == "insufficient_funds"
    pi_id = error.error.payment_intent.id  # type: ignore[union-attr]
    pi = client.v1.payment_intents.retrieve(pi_id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None and pi.last_payment_error.decline_code == "insufficient_funds"
    assert fake.events_of_type("payment_intent.payment_failed")[0]["data"]["object"]["id"] == pi_id
    assert fake.count("POST", "/v1/payment_intents") == 1  # the PaymentIntent exists


def test_same_idempotency_key_replays(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    params: Any = {
        "amount": 1500,
        "currency": "usd",
        "capture_method": "manual",
        "metadata": {"ride_id": "9"},
    }
    first = client.v1.payment_intents.create(params, {"idempotency_key": "ride-9-auth"})
    second = client.v1.payment_intents.create(params, {"idempotency_key": "ride-9-auth"})
    assert second.id == first.id and second.to_dict() == first.to_dict()
    assert len(fake.payment_intents) == 1 and fake.count("POST", "/v1/payment_intents") == 1
    assert [c.replayed for c in fake.calls] == [False, True]
    assert second.last_response is not None and second.last_response.headers["Idempotent-Replayed"] == "true"

    # Another Stripe-Account is another idempotency scope.
    other = client.v1.payment_intents.create(
        params, {"idempotency_key": "ride-9-auth", "stripe_account": driver}
    )
    assert other.id != first.id


def test_same_idempotency_key_other_params(client: stripe.StripeClient) -> None:
    base: Any = {"amount": 1500, "currency": "usd"}
    client.v1.payment_intents.create(base, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({"amount": 1600, "currency": "usd"}, {"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create({"charge": "ch_x"}, {"idempotency_key": "k1"})


def test_card_errors_are_replayed_too(fake: FakeStripe, client: stripe.StripeClient) -> None:
    params: Any = {
        "amount": 900,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": True,
    }
    bodies = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            client.v1.payment_intents.create(params, {"idempotency_key": "declined-once"})
        bodies.append(raised.value.http_body)
    assert bodies[0] == bodies[1] and len(fake.payment_intents) == 1
    assert fake.count("POST", "/v1/payment_intents") == 1


def test_concurrent_requests_with_one_key_create_one_object(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    def create(_: int) -> str:
        return client.v1.payment_intents.create(
            {"amount": 900, "currency": "usd"}, {"idempotency_key": "same"}
        ).id

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = set(pool.map(create, range(12)))
    assert len(ids) == 1 and fake.count("POST", "/v1/payment_intents") == 1


def test_fail_next_without_retries_raises_api_error(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next(1)
    with pytest.raises(stripe.APIError) as raised:
        client.v1.payment_intents.create({"amount": 900, "currency": "usd"}, {"idempotency_key": "k"})
    assert raised.value.http_status == 500
    assert fake.count("POST", "/v1/payment_intents") == 0 and fake.calls[0].injected_failure
    # The failed attempt was not stored: the same key now executes.
    assert client.v1.payment_intents.create({"amount": 900, "currency": "usd"}, {"idempotency_key": "k"}).id


def test_sdk_retries_a_500_with_the_same_key(fake: FakeStripe) -> None:
    client = make_client(fake, retries=2)
    fake.fail_next(1, path_prefix="/v1/payment_intents")
    pi = client.v1.payment_intents.create({"amount": 900, "currency": "usd"})
    assert pi.status == "requires_payment_method"
    assert fake.count("POST", "/v1/payment_intents") == 1 and len(fake.payment_intents) == 1
    first, second = fake.calls
    assert first.status == 500 and second.status == 200
    assert first.idempotency_key == second.idempotency_key is not None  # the SDK's own generated key


def test_lost_response_is_replayed_on_retry(fake: FakeStripe) -> None:
    client = make_client(fake, retries=2)
    fake.drop_response_next(1)
    pi = client.v1.payment_intents.create({"amount": 900, "currency": "usd"}, {"idempotency_key": "lost"})
    assert len(fake.payment_intents) == 1 and pi.id in fake.payment_intents
    assert [c.replayed for c in fake.calls] == [False, True]


def test_auth_and_unknown_ids_and_params(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.AuthenticationError):
        make_client(fake, api_key="sk_test_wrong").v1.payment_intents.retrieve("pi_123")

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_missing")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    for call in (lambda: client.v1.charges.retrieve("ch_x"), lambda: client.v1.events.retrieve("evt_x")):
        with pytest.raises(stripe.InvalidRequestError):
            call()

    # Request options belong in ``options``: in ``params`` they are sent to Stripe, which refuses them.
    bad: Any = {"amount": 900, "currency": "usd", "idempotency_key": "oops"}
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.create(bad)
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "idempotency_key")


def test_legacy_global_configuration(fake: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "api_base", fake.base_url)
    monkeypatch.setattr(stripe, "api_key", fake.api_key)
    first = stripe.PaymentIntent.create(amount=1200, currency="usd", idempotency_key="legacy-1")
    again = stripe.PaymentIntent.create(amount=1200, currency="usd", idempotency_key="legacy-1")
    assert first.id == again.id and fake.count("POST", "/v1/payment_intents") == 1
    assert stripe.PaymentIntent.retrieve(first.id).amount == 1200


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_async_client(fake: FakeStripe, client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    assert pi.status == "succeeded" and pi.amount_received == 1000
    assert (await client.v1.payment_intents.retrieve_async(pi.id)).id == pi.id


def test_webhook_signature_scheme(fake: FakeStripe) -> None:
    event = fake.make_event("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"})
    assert {"id", "object", "type", "created", "data", "api_version", "livemode"} <= event.keys()
    assert event["livemode"] is False and fake.events == [event]

    payload, headers = signed_webhook(event, WEBHOOK_SECRET)
    parsed = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], WEBHOOK_SECRET)
    assert (parsed.id, parsed.type, parsed.data.object["id"]) == (event["id"], event["type"], "pi_1")

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload.replace(b"pi_1", b"pi_2"), headers["Stripe-Signature"], WEBHOOK_SECRET
        )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign_payload(payload, "whsec_other"), WEBHOOK_SECRET)
    old = sign_payload(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, old, WEBHOOK_SECRET)
    assert sign_payload(b"{}", "s", 1) == sign_payload("{}", "s", 1)


def test_dispute_events(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    standalone = charge_dispute_event("ch_1", amount=700, payment_intent="pi_1")
    assert standalone["type"] == "charge.dispute.created"
    assert standalone["data"]["object"]["object"] == "dispute"

    pi = authorize(client, driver)
    client.v1.payment_intents.capture(pi.id)
    event = fake.dispute(pi.id)
    dispute = event["data"]["object"]
    assert (dispute["charge"], dispute["payment_intent"], dispute["amount"]) == (
        pi.latest_charge,
        pi.id,
        2500,
    )
    payload, headers = signed_webhook(event, WEBHOOK_SECRET)
    assert stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], WEBHOOK_SECRET).type == (
        "charge.dispute.created"
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create({"payment_intent": pi.id})
    assert raised.value.code == "charge_disputed"


def test_three_d_secure_then_reset(fake: FakeStripe, client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "capture_method": "manual",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    assert pi.status == "requires_action" and pi.next_action is not None
    event = fake.authenticate(pi.id)
    assert event["type"] == "payment_intent.amount_capturable_updated"
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"

    fake.reset()
    assert not fake.payment_intents and not fake.calls and not fake.events
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve(pi.id)


def test_event_list_and_json_shape(fake: FakeStripe, client: stripe.StripeClient, driver: str) -> None:
    pi = authorize(client, driver)
    client.v1.payment_intents.capture(pi.id)
    listed = client.v1.events.list({"type": "payment_intent.succeeded", "limit": 5})
    assert [e.type for e in listed.data] == ["payment_intent.succeeded"]
    raw = json.loads(json.dumps(fake.payment_intents[pi.id]))
    assert raw["object"] == "payment_intent" and raw["transfer_data"] == {"destination": driver}
    assert threading.active_count() >= 2  # the server thread


def test_lifecycle() -> None:
    fake = FakeStripe(api_keys=["sk_test_a", "sk_test_b"])
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert make_client(fake, api_key="sk_test_b").v1.events.list().data == []
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    fake.stop()  # idempotent


def test_held_requests_wait_until_released_then_run_once_each(fake: FakeStripe,
                                                               client: stripe.StripeClient) -> None:
    # Given account creations parked by the fake, with one idempotency key
    fake.hold("/v1/accounts")
    params = {"type": "express", "email": "d@example.com"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(client.v1.accounts.create, params, {"idempotency_key": "k1"})  # type: ignore[arg-type]
                   for _ in range(3)]
        # Then all three wait at the fake, none has run
        assert fake.wait_held(3, timeout_s=10)
        assert fake.count("POST", "/v1/accounts") == 0
        # When released, they run: one account, the others replayed
        fake.release()
        ids = {future.result(timeout=10)["id"] for future in futures}
    assert len(ids) == 1 and len(fake.accounts) == 1
    assert fake.held == 0
