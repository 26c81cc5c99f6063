"""Realistic Stripe webhook events, signed, in files a load generator reads (`bench_webhooks.py`).

wrk's Lua cannot compute an HMAC, so every event is generated and signed beforehand:
`EventMaker` makes unique `payment_intent.succeeded`, `charge.refunded` and `account.updated`
bodies (API 2024-06-20 shapes, ~1.5-2 KB) with ids `evt_1B<run><tag><index>…`; `new_events()`
signs them with the current time into an `EventFile` (`Stripe-Signature<TAB>body` lines, what
`webhooks.lua` and `webhooks_paced.py` read); `resign()` signs some of them again, as Stripe
signs each delivery.
"""

from __future__ import annotations

import json
import random
import string
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stripe

#: The webhook secret the bench's web process verifies with.
SECRET = "whsec_bench"
_ALNUM = string.ascii_letters + string.digits


class EventMaker:
    """Unique, realistic Stripe events (API 2024-06-20 shapes) with ids `evt_1B<tag><index>…`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.run_id = "".join(self.rng.choices(_ALNUM, k=4))

    def token(self, prefix: str, k: int = 24) -> str:
        return prefix + "".join(self.rng.choices(_ALNUM, k=k))

    def prefix(self, tag: str) -> str:
        """Every id of a run's events starts with this (one letter `tag` per run)."""
        return f"evt_1B{self.run_id}{tag}"

    def event_id(self, tag: str, index: int) -> str:
        return f"{self.prefix(tag)}{index:08d}{self.token('', 10)}"

    def body(self, event_id: str, index: int, now: int) -> dict[str, Any]:
        kind = ("payment_intent.succeeded", "payment_intent.succeeded", "charge.refunded",
                "payment_intent.succeeded", "account.updated")[index % 5]
        envelope: dict[str, Any] = {"id": event_id, "object": "event", "api_version": "2024-06-20",
                                    "created": now - self.rng.randint(0, 5)}
        if kind == "account.updated":
            account = self.token("acct_1", 15)
            envelope["account"] = account
            envelope["data"] = {"object": self.account(account, now),
                                "previous_attributes": {"charges_enabled": False, "payouts_enabled": False}}
        elif kind == "charge.refunded":
            envelope["data"] = {"object": self.charge(now),
                                "previous_attributes": {"amount_refunded": 0, "refunded": False}}
        else:
            envelope["data"] = {"object": self.intent(now)}
        envelope.update({"livemode": False, "pending_webhooks": 1,
                         "request": {"id": self.token("req_", 14), "idempotency_key": str(uuid.uuid4())},
                         "type": kind})
        return envelope

    def intent(self, now: int) -> dict[str, Any]:
        pi = self.token("pi_3")
        amount = self.rng.randint(800, 9_000)
        return {
            "id": pi, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_details": {"tip": {}}, "amount_received": amount, "application": None,
            "application_fee_amount": amount * 15 // 100, "automatic_payment_methods": None,
            "canceled_at": None, "cancellation_reason": None, "capture_method": "manual",
            "client_secret": f"{pi}_secret_{self.token('', 25)}", "confirmation_method": "automatic",
            "created": now - 900, "currency": "eur", "customer": self.token("cus_", 14),
            "description": "Ride", "invoice": None, "last_payment_error": None,
            "latest_charge": self.token("ch_3"), "livemode": False,
            "metadata": {"ride_id": str(uuid.uuid4())}, "next_action": None, "on_behalf_of": None,
            "payment_method": self.token("pm_1"), "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                                "network": None, "request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"], "processing": None, "receipt_email": None, "review": None,
            "setup_future_usage": None, "shipping": None, "source": None, "statement_descriptor": None,
            "statement_descriptor_suffix": None, "status": "succeeded",
            "transfer_data": {"destination": self.token("acct_1", 15)}, "transfer_group": f"group_{pi}",
        }

    def charge(self, now: int) -> dict[str, Any]:
        amount = self.rng.randint(800, 9_000)
        return {
            "id": self.token("ch_3"), "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": amount, "application_fee": self.token("fee_1"),
            "application_fee_amount": amount * 15 // 100,
            "balance_transaction": self.token("txn_3"),
            "billing_details": {"address": {"city": None, "country": "DE", "line1": None, "line2": None,
                                            "postal_code": None, "state": None},
                                "email": None, "name": None, "phone": None},
            "captured": True, "created": now - 3_600, "currency": "eur", "customer": self.token("cus_", 14),
            "description": "Ride", "disputed": False, "failure_code": None, "failure_message": None,
            "livemode": False, "metadata": {"ride_id": str(uuid.uuid4())},
            "outcome": {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                        "risk_score": self.rng.randint(0, 60), "seller_message": "Payment complete.",
                        "type": "authorized"},
            "paid": True, "payment_intent": self.token("pi_3"), "payment_method": self.token("pm_1"),
            "payment_method_details": {"card": {"brand": "visa", "checks": {
                "address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                "country": "DE", "exp_month": self.rng.randint(1, 12), "exp_year": 2030,
                "fingerprint": self.token("", 16), "funding": "credit", "last4": "4242",
                "network": "visa", "three_d_secure": None, "wallet": None}, "type": "card"},
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{self.token('', 60)}",
            "refunded": True, "status": "succeeded", "transfer_group": None,
        }

    def account(self, account: str, now: int) -> dict[str, Any]:
        return {
            "id": account, "object": "account",
            "business_profile": {"mcc": "4121", "name": None, "product_description": "Ride-hailing driver",
                                 "support_email": None, "support_phone": None, "url": None},
            "business_type": "individual",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True, "country": "DE", "created": now - 86_400,
            "default_currency": "eur", "details_submitted": True,
            "email": f"driver-{self.token('', 8).lower()}@example.com",
            "external_accounts": {"object": "list", "data": [], "has_more": False, "total_count": 1,
                                  "url": f"/v1/accounts/{account}/external_accounts"},
            "future_requirements": {"alternatives": [], "current_deadline": None, "currently_due": [],
                                    "disabled_reason": None, "errors": [], "eventually_due": [],
                                    "past_due": [], "pending_verification": []},
            "metadata": {"driver_id": str(uuid.uuid4())}, "payouts_enabled": True,
            "requirements": {"alternatives": [], "current_deadline": None, "currently_due": [],
                             "disabled_reason": None, "errors": [], "eventually_due": [],
                             "past_due": [], "pending_verification": []},
            "settings": {"payouts": {"debit_negative_balances": True, "schedule": {
                "delay_days": 7, "interval": "daily"}, "statement_descriptor": None}},
            "tos_acceptance": {"date": now - 86_000}, "type": "express",
        }


@dataclass
class EventFile:
    """A file of `Stripe-Signature<TAB>body` lines and the event ids in it, in order."""

    path: Path
    ids: list[str]
    mean_bytes: float = 0.0

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def sign(body: str, secret: str) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time())))


def write_events(bodies: Iterable[tuple[str, str]], secret: str) -> EventFile:
    """Sign each `(event id, body)` now with `secret` into a new file."""
    path = Path(tempfile.mkstemp(prefix="bench-webhooks-", suffix=".tsv")[1])
    ids: list[str] = []
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for event_id, body in bodies:
            out.write(f"{sign(body, secret)}\t{body}\n")
            ids.append(event_id)
            size += len(body.encode())
    return EventFile(path=path, ids=ids, mean_bytes=size / len(ids) if ids else 0.0)


def new_events(maker: EventMaker, tag: str, count: int, secret: str = SECRET) -> EventFile:
    now = int(time.time())

    def bodies() -> Iterable[tuple[str, str]]:
        for index in range(count):
            event_id = maker.event_id(tag, index)
            yield event_id, json.dumps(maker.body(event_id, index, now), separators=(",", ":"))

    return write_events(bodies(), secret)


def resign(source: EventFile, ids: set[str]) -> EventFile:
    """The events of `source` whose id is in `ids`, signed again now (Stripe signs each delivery)."""
    def bodies() -> Iterable[tuple[str, str]]:
        with source.path.open(encoding="utf-8") as lines:
            for event_id, line in zip(source.ids, lines, strict=True):
                if event_id in ids:
                    yield event_id, line.rstrip("\n").partition("\t")[2]

    return write_events(bodies(), SECRET)
