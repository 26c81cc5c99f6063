"""The money of payments without a database: commission, cancellation fee, and refund splits."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from app.currencies import CURRENCIES, Currency
from app.services.payments import cancellation_fee, commission, platform_refunded, split_refund

CARD = sorted((c for c in CURRENCIES.values() if c.card), key=lambda c: c.code)
RATES = [Decimal("0.15"), Decimal("0.2"), Decimal("0.125"), Decimal("0.0333"), Decimal("0")]


def ids(currency: Currency) -> str:
    return currency.code


def fares(currency: Currency, rng: random.Random, count: int = 25) -> list[int]:
    """Valid card fares of the currency, from its minimum up."""
    smallest = currency.card_minimum or currency.step
    return [smallest] + [currency.floor(rng.randrange(smallest, 5_000_000)) or smallest
                         for _ in range(count)]


# --- commission and cancellation fee ---------------------------------------------------------------
def test_commission_is_rounded_down_in_the_drivers_favour() -> None:
    assert commission(999, Decimal("0.15"), "EUR") == 149  # 149.85 → the platform takes 149
    assert commission(1000, Decimal("0.15"), "EUR") == 150
    assert commission(1, Decimal("0.15"), "EUR") == 0
    assert commission(12340, Decimal("0.15"), "TND") == 1850  # 1851 is not a TND amount at Stripe
    assert commission(50000, Decimal("0.15"), "ISK") == 7500
    assert commission(50900, Decimal("0.15"), "ISK") == 7600  # 7635 → whole krónur: 76 ISK
    assert cancellation_fee(12340, Decimal("0.2"), "TND") == 2460  # 2468 → 2.460 TND
    assert cancellation_fee(50900, Decimal("0.2"), "UGX") == 10100


@pytest.mark.parametrize("currency", CARD, ids=ids)
def test_commission_and_fee_are_valid_amounts_never_above_the_rate(currency: Currency) -> None:
    rng = random.Random(currency.code)
    for fare in fares(currency, rng):
        for rate in RATES:
            fee = commission(fare, rate, currency.code)
            # Then Stripe would take it as an application fee, and the driver's rest as well
            assert currency.problem(fee, card=False) in (None, "must be positive")
            assert (fare - fee) % currency.step == 0
            # And the platform never takes more than its rate, nor a whole step less
            assert fee <= Decimal(fare) * rate < fee + currency.step
            cancel = cancellation_fee(fare, Decimal("0.2"), currency.code)
            assert cancel % currency.step == 0 and cancel <= Decimal(fare) * Decimal("0.2")


# --- refunds ---------------------------------------------------------------------------------------
def refund_run(currency: Currency, captured: int, fee: int, steps: list[int]) -> list[tuple[int, int]]:
    """Apply partial refunds one after the other, as `_sync_refunds` does; (driver, platform) each."""
    refunded = platform = 0
    parts = []
    for step in steps:
        split = split_refund(refunded_before=refunded, refunded_total=refunded + step, captured=captured,
                             fee=fee, platform_before=platform, currency=currency.code)
        refunded += step
        platform += split.platform
        parts.append((split.driver, split.platform))
    return parts


def test_a_run_of_partial_refunds_gives_back_the_fee_pro_rata_without_drift() -> None:
    # Given a 20.00 EUR fare whose 15 % fee is 3.00 EUR, refunded in three steps of 3.33, 3.33, 13.34
    parts = refund_run(CURRENCIES["EUR"], 2000, 300, [333, 333, 1334])
    # Then each step's platform part is the fee's share of the total so far, rounded up (50, 100, 300)
    assert parts == [(333 - 50, 50), (333 - 50, 50), (1334 - 200, 200)]
    # And per-step rounding (50 + 50 + 200 = 300) added up to the fee exactly


def test_tiny_partial_refunds_never_add_up_to_more_than_the_fee() -> None:
    # Given a 10.00 EUR fare, 15 % fee 1.50, refunded one cent at a time
    parts = refund_run(CURRENCIES["EUR"], 1000, 150, [1] * 1000)
    platform = [p for _, p in parts]
    # Then the platform gives back exactly its fee in all, and never more than the cent refunded
    assert sum(platform) == 150 and all(0 <= p <= 1 for p in platform)
    assert sum(d for d, _ in parts) == 850


def test_three_decimal_refunds_stay_multiples_of_ten() -> None:
    # Given 12.340 TND captured with a 1.850 TND fee, refunded 5.000 then 7.340
    parts = refund_run(CURRENCIES["TND"], 12340, 1850, [5000, 7340])
    # Then 1850 * 5000 / 12340 = 749.6 → 750, and the rest of the fee at the full refund
    assert parts == [(4250, 750), (6240, 1100)]


@pytest.mark.parametrize("currency", CARD, ids=ids)
def test_random_refund_runs_in_every_currency(currency: Currency) -> None:
    rng = random.Random(f"refunds-{currency.code}")
    for captured in fares(currency, rng, count=8):
        fee = commission(captured, Decimal("0.15"), currency.code)
        # a run of valid partial refunds, ending at a full refund or not
        steps: list[int] = []
        left = captured
        while left and len(steps) < 6:
            step = min(left, currency.floor(rng.randrange(1, captured + 1)) or currency.step)
            steps.append(step)
            left -= step
        parts = refund_run(currency, captured, fee, steps)
        refunded = platform = 0
        for step, (driver, part) in zip(steps, parts, strict=True):
            refunded += step
            platform += part
            # each step is split into valid amounts that sum to it
            assert driver + part == step and driver >= 0 and part >= 0
            assert part % currency.step == 0 and driver % currency.step == 0
            # cumulative, never drifting: exactly the fee's share of the total so far, rounded up
            assert platform == platform_refunded(fee, captured, refunded, currency.code)
            # never more than the platform took, and it never keeps more than its rate of what is left
            assert platform <= fee
            assert (fee - platform) * captured <= fee * (captured - refunded)
        if refunded == captured:
            assert platform == fee


def test_a_platform_refund_from_older_rounding_is_corrected_not_repeated() -> None:
    # Given 2 cents already given back by the platform on a 10-cent refund of 20.00 EUR (fee 3.00)
    # When the refund grows to 1000
    split = split_refund(refunded_before=10, refunded_total=1000, captured=2000, fee=300,
                         platform_before=2, currency="EUR")
    # Then the platform gives back what the total asks of it beyond what it already gave
    assert (split.driver, split.platform) == (990 - 148, 148)
