"""What the payment jobs and webhooks decide, against the in-memory gateway (no database, no network):
the money held, captured, released and refunded, the ledger's split, the payment's status, and that a
redelivered job or a repeated event acts once."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from app.adapters.payment_gateway import PaymentGateway
from app.errors import ProviderError
from app.services.payments import settlement
from app.services.payments.ledger import Entry, PlatformTotals
from app.services.payments.settlement import Outcome
from models import LedgerKind, Payment, RideStatus
from tests.unit.fakes import FakeGateway, card_payment, cash_payment

FEE_RATE = Decimal("0.20")


class Books:
    """The ride's ledger as the jobs would leave it: each entry kept once, by its key."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def keep(self, outcome: Outcome) -> Outcome:
        for entry in outcome.entries:
            self.entries.setdefault(entry.key, entry)
        return outcome

    def totals(self) -> PlatformTotals:
        return PlatformTotals().plus(self.entries.values())

    def by_kind(self) -> dict[str, int]:
        sums: dict[str, int] = {}
        for entry in self.entries.values():
            sums[entry.kind.value] = sums.get(entry.kind.value, 0) + entry.amount
        return sums

    def balance(self) -> int:
        return sum(e.amount for e in self.entries.values() if e.kind != LedgerKind.CASH_COMMISSION_OWED)


@pytest.fixture
def stripe() -> FakeGateway:
    return FakeGateway()


def gateway_of(fake: FakeGateway) -> Callable[[], PaymentGateway]:
    return lambda: fake


def no_gateway() -> PaymentGateway:
    raise AssertionError("Stripe was called")


def stripe_net(fake: FakeGateway, payment: Payment) -> int:
    """What the customer paid, says Stripe: captured minus refunded of the captured."""
    charge = fake.charge_of(payment.payment_intent_id or "")
    return charge.amount_captured - charge.refunded_of_captured


def as_loaded(payment: Payment) -> Payment:
    """The same row as another transaction loads it: what is done to one is not seen by the other."""
    twin = card_payment(amount=payment.amount, fee=payment.application_fee, currency=payment.currency)
    for name in ("id", "ride_id", "method", "status", "payment_intent_id", "client_secret", "cancelled_from",
                 "amount_captured", "amount_refunded", "last_error"):
        setattr(twin, name, getattr(payment, name))
    return twin


def held(fake: FakeGateway, *, amount: int = 2500, fee: int = 375, currency: str = "EUR") -> Payment:
    """A card payment whose hold was created, confirmed by the customer and learnt by webhook."""
    payment = card_payment(amount=amount, fee=fee, currency=currency)
    settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(fake))
    assert payment.payment_intent_id is not None
    fake.confirm(payment.payment_intent_id)
    settlement.follow_intent(payment, fake.retrieve_intent(payment.payment_intent_id))
    assert payment.status == "authorized"
    return payment


# --- the hold ------------------------------------------------------------------------------------------
def test_the_hold_is_created_once_however_often_the_job_runs(stripe: FakeGateway) -> None:
    # Given a card ride just accepted
    payment = card_payment(amount=2500, fee=375)
    lost = as_loaded(payment)
    # When a first run reaches Stripe and loses its commit, then the job runs again, twice
    settlement.hold(lost, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    first = settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    again = settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    # Then Stripe holds one PaymentIntent for the fare, the platform's fee kept back, for the driver
    assert len(stripe.intents) == 1 and stripe.calls["create_hold"] == 2
    hold = stripe.holds[payment.payment_intent_id or ""]
    assert (hold.amount, hold.application_fee, hold.destination) == (2500, 375, "acct_driver")
    # And the customer can confirm it, the ride's room told once
    assert (first.result, first.update, payment.status) == ("requires_payment_method", True,
                                                            "requires_payment_method")
    assert payment.client_secret == stripe.intents[payment.payment_intent_id or ""].client_secret
    assert (again.result, again.update) == ("done", False)


@pytest.mark.parametrize("ride_status", [RideStatus.CANCELLED, RideStatus.COMPLETED])
def test_no_hold_for_a_ride_already_over(ride_status: RideStatus) -> None:
    payment = card_payment()
    assert settlement.hold(payment, ride_status, no_gateway).result == "skipped"
    assert (payment.status, payment.payment_intent_id) == ("pending", None)


def test_a_cash_ride_is_never_held() -> None:
    assert settlement.hold(cash_payment(), RideStatus.BID_ACCEPTED, no_gateway).result == "skipped"


def test_stripe_down_leaves_the_payment_as_it_was_for_the_retry(stripe: FakeGateway) -> None:
    payment = card_payment()
    stripe.fail_next("create_hold", transient=True)
    with pytest.raises(ProviderError) as raised:
        settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    assert raised.value.transient
    assert (payment.status, payment.payment_intent_id) == ("pending", None)


# --- completion -------------------------------------------------------------------------------------
def test_completion_captures_the_fare_and_splits_it_once(stripe: FakeGateway) -> None:
    # Given a 25.00 EUR card ride held on the card, the region taking 15 %
    payment, books = held(stripe, amount=2500, fee=375), Books()
    # When the ride is completed, and the capture job is delivered again
    done = books.keep(settlement.take_fare(payment, gateway_of(stripe)))
    again = books.keep(settlement.take_fare(payment, gateway_of(stripe)))
    # Then the whole fare is captured once: the driver earns 21.25, the platform 3.75
    assert (payment.status, payment.amount_captured) == ("captured", 2500)
    assert stripe.calls["capture"] == 1
    assert books.by_kind() == {"driver_earning": 2125, "platform_commission": 375}
    assert books.balance() == stripe_net(stripe, payment) == 2500
    assert (done.update, again.update, again.entries) == (True, False, [])


def test_a_capture_whose_commit_was_lost_is_recorded_from_stripe_not_repeated(stripe: FakeGateway) -> None:
    # Given a held ride whose capture reached Stripe but whose transaction was lost
    payment = held(stripe)
    settlement.take_fare(as_loaded(payment), gateway_of(stripe))
    # When the job runs again on the payment as the database still has it (authorized)
    books = Books()
    books.keep(settlement.take_fare(payment, gateway_of(stripe)))
    # Then Stripe's capture is recorded, and Stripe was asked to capture only once
    assert stripe.calls["capture"] == 1
    assert (payment.status, books.balance()) == ("captured", 2500)


def test_a_hold_never_confirmed_fails_at_completion_and_the_customer_is_told(stripe: FakeGateway) -> None:
    # Given a card ride whose customer never confirmed the card
    payment = card_payment()
    settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    # When the ride is completed
    outcome = settlement.take_fare(payment, gateway_of(stripe))
    # Then nothing is taken, the payment failed, and the customer hears why
    assert (payment.status, payment.amount_captured, outcome.entries) == ("failed", 0, [])
    assert outcome.failure == "not authorized (PaymentIntent requires_payment_method)"
    assert stripe.calls["capture"] == 0


def test_completion_before_the_hold_job_creates_the_same_hold_first(stripe: FakeGateway) -> None:
    payment = card_payment()
    settlement.take_fare(payment, gateway_of(stripe))
    assert stripe.calls["create_hold"] == 1 and payment.payment_intent_id in stripe.intents
    assert payment.status == "failed"  # nobody confirmed it in between


def test_a_cash_ride_records_the_commission_the_driver_owes_once() -> None:
    # Given a 40.00 cash ride, 15 % commission
    payment, books = cash_payment(amount=4000, fee=600), Books()
    # When it is completed (and the job delivered twice)
    books.keep(settlement.take_fare(payment, no_gateway))
    again = books.keep(settlement.take_fare(payment, no_gateway))
    # Then the driver owes 6.00, nothing went through Stripe
    assert payment.status == "cash_due"
    assert books.by_kind() == {"cash_commission_owed": 600} and books.balance() == 0
    assert again.update is False


# --- cancellation ------------------------------------------------------------------------------------
def test_cancelled_before_the_driver_set_off_the_hold_is_released_in_full(stripe: FakeGateway) -> None:
    payment, books = held(stripe, amount=2500), Books()
    payment.cancelled_from = RideStatus.BID_ACCEPTED.value
    books.keep(settlement.close(payment, gateway_of(stripe), FEE_RATE))
    assert payment.status == "released"
    assert stripe.intents[payment.payment_intent_id or ""].status == "canceled"
    assert books.by_kind() == {} and stripe.charge_of(payment.payment_intent_id or "").amount_captured == 0


def test_cancelled_late_the_fee_is_captured_and_the_rest_released_once(stripe: FakeGateway) -> None:
    # Given a 25.00 EUR card ride held, cancelled once the driver was on the way
    payment, books = held(stripe, amount=2500, fee=375), Books()
    payment.cancelled_from = RideStatus.DRIVER_ARRIVING.value
    # When the cancel job runs, and runs again
    books.keep(settlement.close(payment, gateway_of(stripe), FEE_RATE))
    again = books.keep(settlement.close(payment, gateway_of(stripe), FEE_RATE))
    # Then 20 % (5.00) is taken, the commission applying to it; the rest goes back to the card
    assert (payment.status, payment.amount_captured) == ("captured", 500)
    assert books.by_kind() == {"driver_earning": 425, "platform_commission": 75}
    assert books.balance() == stripe_net(stripe, payment) == 500
    assert stripe.calls["capture"] == 1 and again.entries == []


def test_a_late_fee_in_tnd_and_its_commission_are_amounts_stripe_takes(stripe: FakeGateway) -> None:
    payment, books = held(stripe, amount=12340, fee=1850, currency="TND"), Books()
    payment.cancelled_from = RideStatus.PICKUP_ARRIVED.value
    books.keep(settlement.close(payment, gateway_of(stripe), FEE_RATE))
    # 20 % of 12.340 is 2.468 → 2.460 TND; 15 % of that, 0.369 → 0.360 TND
    assert books.by_kind() == {"driver_earning": 2100, "platform_commission": 360}


def test_cancelled_with_nothing_held_stripe_is_not_called() -> None:
    for payment in (card_payment(), cash_payment()):
        outcome = settlement.close(payment, no_gateway, FEE_RATE)
        assert (payment.status, outcome.update) == ("cancelled", True)


def test_a_payment_already_closed_is_left_alone(stripe: FakeGateway) -> None:
    payment = held(stripe)
    settlement.take_fare(payment, gateway_of(stripe))
    outcome = settlement.close(payment, no_gateway, FEE_RATE)
    assert (outcome.result, outcome.update, payment.amount_captured) == ("captured", False, 2500)


# --- refunds --------------------------------------------------------------------------------------------
def captured(fake: FakeGateway, books: Books, *, amount: int, fee: int) -> Payment:
    payment = held(fake, amount=amount, fee=fee)
    books.keep(settlement.take_fare(payment, gateway_of(fake)))
    return payment


def test_refunds_come_back_from_driver_and_platform_pro_rata_once(stripe: FakeGateway) -> None:
    # Given a 20.00 ride captured, the platform's fee 3.00
    books = Books()
    payment = captured(stripe, books, amount=2000, fee=300)
    # When an admin refunds 10.00, and the job is delivered twice
    books.keep(settlement.give_back(payment, gateway_of(stripe), books.totals(), "req-1", 1000))
    again = books.keep(settlement.give_back(payment, gateway_of(stripe), books.totals(), "req-1", 1000))
    # Then Stripe refunded once; the driver gives back 8.50, the platform 1.50
    assert len(stripe.refunds) == 1 and again.entries == []
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 1000)
    assert books.by_kind() == {"driver_earning": 1700, "platform_commission": 300,
                               "driver_refund": -850, "platform_refund": -150}
    # When the rest is refunded (a new request, no amount)
    books.keep(settlement.give_back(payment, gateway_of(stripe), books.totals(), "req-2", None))
    # Then the platform has given back exactly its fee and the ledger is back to zero, like Stripe
    assert (payment.status, payment.amount_refunded) == ("refunded", 2000)
    assert books.totals() == PlatformTotals(fee=300, refunded=300)
    assert books.balance() == stripe_net(stripe, payment) == 0


def test_a_refund_stripe_refuses_is_logged_and_a_failure_that_may_pass_retried(stripe: FakeGateway) -> None:
    books = Books()
    payment = captured(stripe, books, amount=2000, fee=300)
    stripe.fail_next("refund", transient=False)
    refused = settlement.give_back(payment, gateway_of(stripe), books.totals(), "req-1", 500)
    assert (refused.result, refused.entries, payment.amount_refunded) == ("captured", [], 0)
    stripe.fail_next("refund", transient=True)
    with pytest.raises(ProviderError):
        settlement.give_back(payment, gateway_of(stripe), books.totals(), "req-2", 500)


def test_nothing_to_refund_before_a_capture() -> None:
    assert settlement.give_back(card_payment(), no_gateway, PlatformTotals(), "req", None).result == "skipped"


# --- webhooks -------------------------------------------------------------------------------------------
def test_events_out_of_order_settle_on_stripes_current_state(stripe: FakeGateway) -> None:
    # Given a held ride captured from Stripe's dashboard
    books = Books()
    payment = held(stripe, amount=2500, fee=375)
    stale = stripe.intents[payment.payment_intent_id or ""]  # the `amount_capturable_updated` state
    stripe.capture_from_dashboard(payment.payment_intent_id or "")
    # When `succeeded` is handled, then the earlier event (re-read: succeeded; or even stale)
    books.keep(settlement.follow_intent(payment, stripe.retrieve_intent(payment.payment_intent_id or "")))
    again = books.keep(settlement.follow_intent(payment, stripe.retrieve_intent(stale.id)))
    older = books.keep(settlement.follow_intent(payment, stale))
    # Then the fare is captured and split once, and nothing undoes it
    assert (payment.status, payment.amount_captured) == ("captured", 2500)
    assert books.by_kind() == {"driver_earning": 2125, "platform_commission": 375}
    assert (again.update, older.update, older.entries) == (False, False, [])


def test_a_declined_card_tells_the_customer_once_and_waits_for_another(stripe: FakeGateway) -> None:
    payment = card_payment()
    settlement.hold(payment, RideStatus.BID_ACCEPTED, gateway_of(stripe))
    stripe.confirm(payment.payment_intent_id or "", declined=True)
    state = stripe.retrieve_intent(payment.payment_intent_id or "")
    first = settlement.follow_intent(payment, state)
    repeated = settlement.follow_intent(payment, state)
    assert (payment.status, payment.last_error) == ("requires_payment_method", "card_declined")
    assert (first.failure, first.update) == ("card_declined", True)
    assert (repeated.failure, repeated.update) == (None, False)


def test_a_hold_cancelled_at_stripe_releases_an_open_payment(stripe: FakeGateway) -> None:
    payment = held(stripe)
    stripe.cancel(payment.payment_intent_id or "", idempotency_key="dashboard")
    outcome = settlement.follow_intent(payment, stripe.retrieve_intent(payment.payment_intent_id or ""))
    assert (payment.status, outcome.update) == ("released", True)


def test_a_dashboard_refund_is_split_and_a_missed_capture_recorded_first(stripe: FakeGateway) -> None:
    # Given a ride captured at Stripe whose capture we never recorded, then refunded 4.00 there
    books = Books()
    payment = held(stripe, amount=2000, fee=300)
    stripe.capture_from_dashboard(payment.payment_intent_id or "")
    stripe.refund_from_dashboard(payment.payment_intent_id or "", 400)
    # When `charge.refunded` is handled, twice
    charge = stripe.charge_of(payment.payment_intent_id or "")
    books.keep(settlement.follow_charge(payment, charge, gateway_of(stripe), books.totals()))
    again = books.keep(settlement.follow_charge(payment, charge, gateway_of(stripe), books.totals()))
    # Then the capture and the refund are both in the ledger, once, and it matches Stripe
    assert (payment.status, payment.amount_captured, payment.amount_refunded) == ("partially_refunded",
                                                                                2000, 400)
    assert books.by_kind() == {"driver_earning": 1700, "platform_commission": 300,
                               "driver_refund": -340, "platform_refund": -60}
    assert books.balance() == stripe_net(stripe, payment) == 1600
    assert again.entries == [] and again.update is False
