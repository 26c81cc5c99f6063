"""When a cancellation costs the customer, and how much (no database; commission and refund splits
are in test_payments.py)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from app.services.payments.ledger import Entry, PlatformTotals
from app.services.payments.policy import cancellation_fee_rate, fee_due, late_cancellation_fee
from app.settings import Settings
from models import LedgerKind, RideStatus

SET_OFF = [RideStatus.DRIVER_ARRIVING, RideStatus.PICKUP_ARRIVED, RideStatus.LOADING, RideStatus.IN_TRANSIT,
           RideStatus.DROPOFF_ARRIVED]


@pytest.mark.parametrize("cancelled_from", list(RideStatus), ids=str)
def test_the_fee_is_due_only_once_the_driver_has_set_off(cancelled_from: RideStatus) -> None:
    assert fee_due(cancelled_from.value) == (cancelled_from in SET_OFF)


def test_a_ride_cancelled_before_the_driver_set_off_costs_nothing() -> None:
    # Given a 25.00 EUR card ride and the default 20 % fee
    # When it is cancelled while still waiting for its driver (or with no recorded status at all)
    for cancelled_from in (RideStatus.PENDING_BIDS.value, RideStatus.BID_ACCEPTED.value, None):
        # Then nothing is taken
        assert late_cancellation_fee(2500, "EUR", cancelled_from, Decimal("0.20")) == 0


def test_a_late_cancellation_costs_the_fee_rounded_down_to_an_amount_the_currency_takes() -> None:
    # Given a card ride cancelled once the driver is on the way, at the default 20 %
    late = RideStatus.DRIVER_ARRIVING.value
    # Then the customer pays a fifth of the fare, never more
    assert late_cancellation_fee(2500, "EUR", late, Decimal("0.20")) == 500
    assert late_cancellation_fee(999, "EUR", late, Decimal("0.20")) == 199  # 199.8 → 199
    assert late_cancellation_fee(12340, "TND", late, Decimal("0.20")) == 2460  # 2.468 → 2.460 TND
    assert late_cancellation_fee(50900, "ISK", late, Decimal("0.20")) == 10100  # whole krónur


def test_the_fee_rate_is_the_farms_setting(settings: Settings) -> None:
    tripled = dataclasses.replace(settings, pricing=dataclasses.replace(
        settings.pricing, cancellation_fee_rate=Decimal("0.6")))
    assert cancellation_fee_rate(settings) == Decimal("0.20")
    assert cancellation_fee_rate(tripled) == Decimal("0.6")


def test_platform_totals_follow_the_entries_written_after_them() -> None:
    # Given a ride whose platform took 375 and gave back 150
    totals = PlatformTotals(fee=375, refunded=150)
    # When a capture's and a refund's entries are added (driver entries don't count)
    after = totals.plus([Entry(LedgerKind.PLATFORM_COMMISSION, 25, "k1", None),
                         Entry(LedgerKind.DRIVER_EARNING, 2125, "k2", None),
                         Entry(LedgerKind.PLATFORM_REFUND, -50, "k3", None)])
    # Then the fee and what it gave back are both up to date
    assert after == PlatformTotals(fee=400, refunded=200)
