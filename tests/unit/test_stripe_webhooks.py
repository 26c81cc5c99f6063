"""The one webhook verification path (`StripeWebhooks`, also the gateway's `verify_webhook`), with the
real SDK's check of Stripe's signature scheme and no network."""

from __future__ import annotations

import dataclasses
import time

import pytest

from app.adapters.stripe_gateway import StripeGateway, StripeWebhooks
from app.errors import InvalidSignature
from app.settings import StripeSettings
from tests.fakes.stripe_server import sign_payload

SECRET = "whsec_unit"
SETTINGS = StripeSettings(secret_key="sk_test_unit", webhook_secret=SECRET, webhook_tolerance_s=300)
EVENT = b'{"id": "evt_1", "type": "account.updated"}'


def refusal(payload: bytes, signature: str | None, settings: StripeSettings = SETTINGS) -> str:
    with pytest.raises(InvalidSignature) as refused:
        StripeWebhooks(settings).verify_webhook(payload, signature)
    assert (refused.value.status_code, refused.value.code) == (400, "INVALID_SIGNATURE")
    return refused.value.message


def test_an_event_signed_with_the_secret_verifies() -> None:
    StripeWebhooks(SETTINGS).verify_webhook(EVENT, sign_payload(EVENT, SECRET))


def test_the_gateway_verifies_through_the_same_path() -> None:
    gateway = StripeGateway(SETTINGS)
    gateway.verify_webhook(EVENT, sign_payload(EVENT, SECRET))
    with pytest.raises(InvalidSignature):
        gateway.verify_webhook(EVENT, sign_payload(EVENT, "whsec_someone_else"))


def test_a_forged_an_old_or_a_tampered_event_is_refused() -> None:
    does_not_verify = "The Stripe-Signature does not verify (or is too old)."
    assert refusal(EVENT, sign_payload(EVENT, "whsec_someone_else")) == does_not_verify
    assert refusal(EVENT, sign_payload(EVENT, SECRET, int(time.time()) - 3600)) == does_not_verify
    assert refusal(EVENT.replace(b"evt_1", b"evt_2"), sign_payload(EVENT, SECRET)) == does_not_verify
    assert refusal(b"\xff\xfe not utf-8", sign_payload(EVENT, SECRET)) == does_not_verify


def test_a_missing_header_or_no_webhook_secret_is_refused_saying_so() -> None:
    assert refusal(EVENT, None) == "The Stripe-Signature header is missing."
    assert refusal(EVENT, "") == "The Stripe-Signature header is missing."
    off = dataclasses.replace(SETTINGS, webhook_secret="", secret_key="")
    assert "STRIPE_WEBHOOK_SECRET" in refusal(EVENT, sign_payload(EVENT, SECRET), off)
