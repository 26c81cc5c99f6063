"""Stripe's webhooks: on the web, verify, store once, enqueue (`receive_event`); in the job
(`payments.handle_event`), act on the stored event by re-reading the object's current state at Stripe,
so events arriving late, twice or out of order settle on the same state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.adapters.payment_gateway import WebhookVerifier
from app.errors import ValidationFailed
from app.keys import BOOKINGS_SETTLE, PAYMENTS_HANDLE_EVENT
from app.logging import get_logger
from app.outbox import INSERT_JOB, add_job
from app.services.payments import ledger, settlement
from app.services.payments.operations import JobEnv, carry_out, emit_update, lock_payment
from app.statements import StatementPool
from models import Driver, Payment, StripeEvent

log = get_logger("payments")


# --- on the web: verify, store once, enqueue ---------------------------------------------------
class _EventHead(msgspec.Struct):
    id: str
    type: str
    account: str | None = None


_STORE_EVENT: Final = """
WITH stored AS (
    INSERT INTO stripe_events (id, type, account, payload, received_at)
    VALUES (%(id)s, %(type)s, %(account)s, CAST(%(payload)s AS jsonb), %(now)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
""" + INSERT_JOB + """
SELECT %(message_id)s, """ + PAYMENTS_HANDLE_EVENT.sql + """, jsonb_build_array(stored.id), '{}'::jsonb,
       '{}'::jsonb, %(now)s, %(now)s
FROM stored
RETURNING 1
"""


async def receive_event(verifier: WebhookVerifier, statements: StatementPool, payload: bytes,
                        signature: str | None) -> bool:
    """A webhook: verified on its raw body (`InvalidSignature`, nothing stored), then `store_event`."""
    verifier.verify_webhook(payload, signature)
    return await store_event(statements, payload)


async def store_event(statements: StatementPool, payload: bytes) -> bool:
    """Store a verified event once by its id and enqueue its handling; False for a duplicate.

    One statement in autocommit: the event and its job's outbox row are written together or not
    at all, and a replayed event id writes nothing.
    """
    try:
        head = msgspec.json.decode(payload, type=_EventHead)
    except msgspec.DecodeError as exc:
        raise ValidationFailed("The event is not a Stripe event.", details={"body": str(exc)}) from exc
    row = await statements.fetch_one(_STORE_EVENT, {
        "id": head.id, "type": head.type, "account": head.account, "payload": payload.decode("utf-8"),
        "now": datetime.now(UTC), "message_id": uuid.uuid4(),
    })
    return row is not None


# --- in the job: act on it once ----------------------------------------------------------------
def handle_event(session: Session, env: JobEnv, event_id: str) -> str:
    """Act on a stored event by re-reading the object's current state at Stripe (order-proof)."""
    event = session.scalar(select(StripeEvent).where(StripeEvent.id == event_id).with_for_update())
    if event is None:
        return "unknown"
    if event.processed_at is not None:
        return "done"
    obj = (event.payload.get("data") or {}).get("object") or {}
    kind = event.type
    outcome = "ignored"
    if kind.startswith("payment_intent."):
        outcome = _on_intent(session, env, str(obj.get("id")), obj.get("metadata") or {})
    elif kind == "charge.refunded":
        outcome = _on_charge_refunded(session, env, str(obj.get("id")))
    elif kind == "charge.dispute.created":
        outcome = _on_dispute(session, env, obj)
    elif kind == "account.updated":
        outcome = _on_account(session, env, str(obj.get("id")))
    event.processed_at = datetime.now(UTC)
    log.info("payments.event_handled", event_id=event_id, type=kind, outcome=outcome)
    return outcome


def _payment_for_intent(session: Session, intent_id: str, ride_id: str | None,
                        booking_id: str | None = None) -> Payment | None:
    payment = session.scalar(select(Payment).where(Payment.payment_intent_id == intent_id).with_for_update())
    if payment is None and ride_id:
        try:
            payment = lock_payment(session, uuid.UUID(ride_id))
        except ValueError:
            return None
    if payment is None and booking_id:
        try:
            payment = session.scalar(select(Payment).where(Payment.booking_id == uuid.UUID(booking_id))
                                     .with_for_update())
        except ValueError:
            return None
    return payment


def _on_intent(session: Session, env: JobEnv, intent_id: str, metadata: dict[str, Any]) -> str:
    payment = _payment_for_intent(session, intent_id, metadata.get("ride_id"), metadata.get("booking_id"))
    if payment is None:
        return "no payment"
    state = env.gateway().retrieve_intent(intent_id)
    outcome = carry_out(session, env, payment, settlement.follow_intent(payment, state))
    if payment.booking_id is not None:
        # The booking follows its payment in its own job (booking row first, then the payment).
        add_job(session, BOOKINGS_SETTLE, str(payment.booking_id),
                dedupe_key=f"booking:{payment.booking_id}:settle:payment:{payment.status}")
    return outcome


def _on_charge_refunded(session: Session, env: JobEnv, charge_id: str) -> str:
    charge = env.gateway().retrieve_charge(charge_id)
    if charge.payment_intent is None:
        return "no payment"
    payment = _payment_for_intent(session, charge.payment_intent, None)
    if payment is None:
        return "no payment"
    totals = ledger.platform_totals(session, payment)
    return carry_out(session, env, payment, settlement.follow_charge(payment, charge, env.gateway, totals))


def _on_dispute(session: Session, env: JobEnv, dispute: dict[str, Any]) -> str:
    intent_id = dispute.get("payment_intent")
    payment = _payment_for_intent(session, str(intent_id), None) if intent_id else None
    if payment is None:
        return "no payment"
    if not payment.disputed:
        payment.disputed = True
        payment.updated_at = datetime.now(UTC)
        log.warning("payments.disputed", subject=payment.subject, dispute=dispute.get("id"),
                    amount=dispute.get("amount"), reason=dispute.get("reason"))
        if payment.ride_id is not None:  # a booking's parties learn of it from support
            emit_update(payment, env, status="disputed")
    return "disputed"


def _on_account(session: Session, env: JobEnv, account_id: str) -> str:
    state = env.gateway().retrieve_account(account_id)
    session.execute(update(Driver).where(Driver.stripe_account_id == account_id)
                    .values(charges_enabled=state.charges_enabled, payouts_enabled=state.payouts_enabled))
    return f"charges={state.charges_enabled} payouts={state.payouts_enabled}"
