"""Payments: the fare held on the card at accept, captured at completion, released or refunded.

Policy (docs/payments.md):
- **Commission** = the region's rate times the fare, **rounded down** to a valid amount of the
  currency (`app.currencies`: a multiple of 10 in TND, of 100 in ISK): the platform never takes more
  than its stated rate; the driver gets the rest. Card rides: Stripe's
  `application_fee_amount` on a destination charge to the driver's Connect account.
- **Hold** (`payments.authorize`) when a card ride's bid is accepted: a manual-capture
  PaymentIntent the customer confirms with its `clientSecret` (`POST /payments/{rideId}/intent`,
  `app.services.payment_setup`, which also creates drivers' Connect accounts).
  A driver whose Connect account can't take charges and payouts can't be accepted for a card ride.
  The driver can't set off (DRIVER_ARRIVING) until the hold is authorized (409 `CONFLICT`,
  `details.reason` `PAYMENT_NOT_AUTHORIZED`); a hold not authorized `PAYMENT_HOLD_TIMEOUT` seconds
  after the accept cancels the ride (`rides.expire_hold`, `app.services.ride_expiry`).
- **Capture** (`payments.capture`) when the ride is COMPLETED.
- **Cancelled** (`payments.cancel`): before the driver set off (PENDING_BIDS, BID_ACCEPTED) the hold
  is released in full. From DRIVER_ARRIVING on, a **cancellation fee** (`PAYMENT_CANCELLATION_FEE_RATE`
  times the fare, 20 % by default, rounded down the same way) is captured from the hold and the rest
  released; the commission applies to the fee. A hold the customer never confirmed is simply cancelled.
- **Refunds** (`payments.refund`, from an admin, or made in Stripe's dashboard and learnt from
  `charge.refunded`) come back from the driver's transfer and the platform's fee pro rata: the
  platform's part of the refunded total is its fee's share of it rounded up (`platform_refunded`),
  from cumulative totals, so partial refunds never add up to more than the fee nor drift.
- **Cash** rides never touch Stripe: at completion the commission is recorded as owed by the driver.

Ledger: append-only entries, each written once by its dedupe key; for every card ride the entries
sum to what Stripe captured minus what it refunded (`ledger_balance`). Every Stripe call carries an
idempotency key fixed by the ride and the operation, and every job re-reads Stripe's state rather
than trusting the order of events, so a job delivered twice — or a webhook before its job — acts once.

The package, one concept a module (every name other code uses is re-exported here):

- `policy` — the money rules, pure: commission, cancellation fee, refund split;
- `intents` — a ride's hold at Stripe, pure: its key and request, the PaymentIntent's state mapped
  onto the payment (`INTENT_STATUSES`, `OPEN_STATUSES`, `HOLD_SECURED`);
- `holds` — in the API's transactions: may the driver be paid, the payment opened at the accept,
  the hold required before setting off, the jobs a ride's move calls for, an admin's refund;
- `settlement` — what the jobs decide with the `PaymentGateway`, pure (no database): hold,
  capture, release or fee, refund, follow a PaymentIntent or a charge;
- `operations` — the jobs' use cases: lock the payment, decide, carry the outcome out (`JobEnv`);
- `webhooks` — Stripe's events: verified and stored once on the web, handled in the job;
- `ledger` — the entries, their totals, a driver's earnings.

The payment's status moves only as `models.payment_states` allows (`Payment.move_to`).
"""

from __future__ import annotations

from app.errors import ProviderError
from app.services.payments.holds import (
    after_ride_move,
    cancelled_by_system,
    check_driver_can_be_paid,
    open_payment,
    request_refund,
    require_hold_secured,
)
from app.services.payments.intents import (
    HOLD_SECURED,
    INTENT_STATUSES,
    OPEN_STATUSES,
    apply_intent,
    hold_key,
    hold_params_of,
)
from app.services.payments.ledger import Earnings, earnings, ledger_balance
from app.services.payments.operations import JobEnv, authorize, cancel, capture, payment_event, refund
from app.services.payments.policy import (
    FEE_AFTER,
    RefundSplit,
    cancellation_fee,
    commission,
    platform_refunded,
    split_refund,
)
from app.services.payments.webhooks import handle_event, receive_event, store_event

__all__ = [
    "FEE_AFTER",
    "HOLD_SECURED",
    "INTENT_STATUSES",
    "OPEN_STATUSES",
    "Earnings",
    "JobEnv",
    "ProviderError",
    "RefundSplit",
    "after_ride_move",
    "apply_intent",
    "authorize",
    "cancel",
    "cancellation_fee",
    "cancelled_by_system",
    "capture",
    "check_driver_can_be_paid",
    "commission",
    "earnings",
    "handle_event",
    "hold_key",
    "hold_params_of",
    "ledger_balance",
    "open_payment",
    "payment_event",
    "platform_refunded",
    "receive_event",
    "refund",
    "request_refund",
    "require_hold_secured",
    "split_refund",
    "store_event",
]
