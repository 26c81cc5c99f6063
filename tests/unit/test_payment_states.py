"""The payment state machine, checked exhaustively without a database: every pair of statuses."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.errors import InvalidPaymentTransition, InvalidTransition
from app.services.payments import HOLD_SECURED, INTENT_STATUSES, OPEN_STATUSES
from models import Payment
from models import PaymentStatus as S
from models.payment_states import OPEN, check_move, may_move

# What the jobs and webhooks do today, written out by hand (not derived from the table under test).
ALLOWED: set[tuple[S, S]] = {
    # the PaymentIntent's pre-capture state, re-read from Stripe (`processing` maps back to waiting)
    (S.PENDING, S.REQUIRES_PAYMENT_METHOD), (S.PENDING, S.AUTHORIZED),
    (S.REQUIRES_PAYMENT_METHOD, S.AUTHORIZED), (S.AUTHORIZED, S.REQUIRES_PAYMENT_METHOD),
    # an open payment closes: captured, released, failed at capture; cancelled if nothing was held
    *((s, S.CAPTURED) for s in OPEN), *((s, S.RELEASED) for s in OPEN), *((s, S.FAILED) for s in OPEN),
    (S.PENDING, S.CANCELLED),
    # refunds
    (S.CAPTURED, S.PARTIALLY_REFUNDED), (S.CAPTURED, S.REFUNDED), (S.PARTIALLY_REFUNDED, S.REFUNDED),
    # a hold Stripe cancelled while the ride went on fails at completion; Stripe's capture wins
    (S.RELEASED, S.FAILED), (S.FAILED, S.CAPTURED),
    # cash
    (S.PENDING, S.CASH_DUE),
}

MOVES = [(a, b) for a, b in itertools.product(S, S) if a != b]


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_an_allowed_move_passes(current: S, target: S) -> None:
    assert check_move(current, target) == target


@pytest.mark.parametrize(("current", "target"), [m for m in MOVES if m not in ALLOWED])
def test_every_other_move_is_an_invalid_payment_transition_naming_from_and_to(current: S, target: S) -> None:
    with pytest.raises(InvalidPaymentTransition) as refused:
        check_move(current, target)
    assert isinstance(refused.value, InvalidTransition)
    assert (refused.value.status_code, refused.value.code) == (409, "INVALID_TRANSITION")
    assert refused.value.details == {"from": current.value, "to": target.value}


@pytest.mark.parametrize("status", list(S))
def test_staying_in_a_status_is_no_move_so_a_redelivery_may_reapply_it(status: S) -> None:
    assert may_move(status, status)


def test_money_taken_or_given_back_never_goes_back_to_open() -> None:
    for after in (S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED):
        for back in (*OPEN, S.RELEASED, S.CANCELLED, S.FAILED):
            assert not may_move(after, back), (after, back)


def test_final_statuses_allow_no_move() -> None:
    for final in (S.REFUNDED, S.CANCELLED, S.CASH_DUE, S.CASH_SETTLED):
        assert [t for t in S if t != final and may_move(final, t)] == []


def test_every_intent_state_may_be_recorded_on_every_open_payment() -> None:
    """The intent route records Stripe's answer by compare-and-set on `OPEN_STATUSES` in SQL: each
    move it can make must be one the table allows."""
    assert {S(s) for s in OPEN_STATUSES} == OPEN
    for current, target in itertools.product(OPEN, set(INTENT_STATUSES.values())):
        assert may_move(current, target), (current, target)


def test_a_secured_hold_is_authorized_or_captured() -> None:
    assert {S(s) for s in HOLD_SECURED} == {S.AUTHORIZED, S.CAPTURED}


# --- the entity's method ----------------------------------------------------------------------------
def payment(status: S) -> Payment:
    long_ago = datetime(2024, 1, 1, tzinfo=UTC)
    return Payment(id=uuid.uuid4(), ride_id=uuid.uuid4(), customer_id=uuid.uuid4(), driver_id=uuid.uuid4(),
                   method="card", status=status.value, amount=2500, currency="EUR",
                   commission_rate=Decimal("0.15"), application_fee=375, updated_at=long_ago)


def test_a_payment_moves_and_is_stamped() -> None:
    # Given an authorized payment
    held = payment(S.AUTHORIZED)
    at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=1)
    # When it is captured
    held.move_to(S.CAPTURED, at)
    # Then its status and its update time say so
    assert (held.status, held.updated_at) == ("captured", at)


def test_a_refused_move_leaves_the_payment_as_it_was() -> None:
    # Given a refunded payment
    refunded = payment(S.REFUNDED)
    before = refunded.updated_at
    # When something tries to hold it again: refused, nothing changed
    with pytest.raises(InvalidPaymentTransition):
        refunded.move_to(S.AUTHORIZED, datetime.now(UTC))
    assert (refunded.status, refunded.updated_at) == ("refunded", before)
