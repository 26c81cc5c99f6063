"""The payment state machine, as data: the statuses, the moves between them, and one pure function.

The moves are those the payment jobs and webhooks make (`app.services.payments`). Stripe's state
is the truth and is re-read by every job, so a move is allowed when Stripe can report it, in
whatever order its events arrive:

- an **open** payment (pending, waiting for the card, authorized) follows its PaymentIntent's
  pre-capture state either way (an authorized intent may be `processing` again), and closes by a
  capture, a release, a failure at capture, or — nothing was ever held — a cancellation;
- a **captured** one is refunded in part, again in part, then in full;
- a hold Stripe cancelled while the ride went on (its expiry, the dashboard) leaves the payment
  released, and the capture at completion then fails;
- a **failed** payment is captured after all if Stripe says the money was taken (the customer
  confirmed later, a capture from the dashboard): the ledger must follow Stripe;
- a **cash** payment is due at completion, or cancelled with the ride.

Staying in a status is no move, and always allowed: a redelivered job or a repeated webhook
re-applies what it already did. `CASH_SETTLED` is reached by nothing yet.
"""

from __future__ import annotations

import enum
from typing import Final

from models.errors import InvalidPaymentTransition


class PaymentStatus(enum.StrEnum):
    #: Card: waiting for the hold job / the customer to confirm the PaymentIntent.
    PENDING = "pending"
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    #: The fare is held on the card (manual capture).
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    #: The hold was released (ride cancelled before the fee point).
    RELEASED = "released"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    FAILED = "failed"
    #: Cash: the driver collected the fare; the platform's commission is owed by the driver.
    CASH_DUE = "cash_due"
    CASH_SETTLED = "cash_settled"
    CANCELLED = "cancelled"


S = PaymentStatus

#: Before any money moved: what Stripe says of the PaymentIntent may still change the status.
OPEN: Final = frozenset({S.PENDING, S.REQUIRES_PAYMENT_METHOD, S.AUTHORIZED})

#: Each status → the statuses it may move to. A status absent as a key allows no move.
TRANSITIONS: Final[dict[S, frozenset[S]]] = {
    S.PENDING: frozenset({S.REQUIRES_PAYMENT_METHOD, S.AUTHORIZED, S.CAPTURED, S.RELEASED, S.FAILED,
                          S.CANCELLED, S.CASH_DUE}),
    S.REQUIRES_PAYMENT_METHOD: frozenset({S.AUTHORIZED, S.CAPTURED, S.RELEASED, S.FAILED}),
    S.AUTHORIZED: frozenset({S.REQUIRES_PAYMENT_METHOD, S.CAPTURED, S.RELEASED, S.FAILED}),
    S.CAPTURED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.REFUNDED}),
    S.RELEASED: frozenset({S.FAILED}),
    S.FAILED: frozenset({S.CAPTURED}),
}


def may_move(current: PaymentStatus, target: PaymentStatus) -> bool:
    return current == target or target in TRANSITIONS.get(current, frozenset())


def check_move(current: PaymentStatus, target: PaymentStatus) -> PaymentStatus:
    """`target`, unless the table refuses the move: `InvalidPaymentTransition` (details `from`/`to`)."""
    if not may_move(current, target):
        raise InvalidPaymentTransition(current.value, target.value)
    return target
