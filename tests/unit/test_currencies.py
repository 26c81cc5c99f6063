"""The currency table: every currency's amounts are representable, displayable and valid at Stripe."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.currencies import CURRENCIES, Currency, lookup, of

ALL = sorted(CURRENCIES.values(), key=lambda c: c.code)
CARD = [c for c in ALL if c.card]


def ids(currency: Currency) -> str:
    return currency.code


def parse(shown: str, currency: Currency) -> int:
    """What a reader of `display` gets back: the number times 10^exponent."""
    number, code = shown.split(" ")
    assert code == currency.code
    return int(Decimal(number).scaleb(currency.exponent))


# --- the table itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("currency", ALL, ids=ids)
def test_every_currency_has_a_sane_exponent_and_step(currency: Currency) -> None:
    assert len(currency.code) == 3 and currency.code.isalpha() and currency.code.isupper()
    assert 0 <= currency.iso_exponent <= 4 and 0 <= currency.exponent <= 4
    assert currency.step in (1, 10, 100)
    # a step never asks for finer than a whole unit of the currency
    assert currency.step <= 10 ** currency.exponent
    assert currency.payout_step % currency.step == 0
    if not currency.card:  # cash only: the ISO minor unit as it is
        assert (currency.exponent, currency.step, currency.card_minimum) == (currency.iso_exponent, 1, None)


def test_the_table_is_iso_4217_list_one_with_minor_units() -> None:
    assert len(CURRENCIES) == 164
    assert all(lookup(code) is not None for code in ("EUR", "USD", "JPY", "TND", "ISK", "XCG", "ZWG"))
    # withdrawn, not money, or not ISO at all
    assert all(lookup(code) is None for code in ("BGN", "HRK", "ANG", "XAU", "XDR", "XXX", "eur", "ZZZ"))


def test_a_stored_amount_in_a_code_the_table_does_not_know_reads_as_two_decimals() -> None:
    assert of("tnd") is CURRENCIES["TND"]
    assert of("BGN") == Currency("BGN", iso_exponent=2, exponent=2)  # withdrawn in 2026
    assert of("BGN").display(1999) == "19.99 BGN" and of("BGN").floor(Decimal("149.85")) == 149


@pytest.mark.parametrize(("code", "exponent", "step"), [
    ("EUR", 2, 1), ("USD", 2, 1), ("JPY", 0, 1), ("KRW", 0, 1), ("XOF", 0, 1), ("MGA", 0, 1),
    ("BHD", 3, 10), ("JOD", 3, 10), ("KWD", 3, 10), ("OMR", 3, 10), ("TND", 3, 10),
    ("ISK", 2, 100), ("UGX", 2, 100), ("HUF", 2, 1), ("TWD", 2, 1),
    ("IQD", 3, 1), ("CLF", 4, 1),  # not charged by Stripe: ISO's minor unit
])
def test_stripes_rules_are_encoded(code: str, exponent: int, step: int) -> None:
    currency = CURRENCIES[code]
    assert (currency.exponent, currency.step) == (exponent, step)


def test_stripes_special_cases() -> None:
    # ISK and UGX: ISO says no decimals, Stripe keeps two and takes whole units only
    assert [(CURRENCIES[c].iso_exponent, CURRENCIES[c].exponent) for c in ("ISK", "UGX")] == [(0, 2)] * 2
    # HUF and TWD: any two-decimal charge, whole units for manual payouts
    assert [(CURRENCIES[c].step, CURRENCIES[c].payout_step) for c in ("HUF", "TWD")] == [(1, 100)] * 2
    assert CURRENCIES["IDR"].card_maximum == 999_999_999_999
    assert CURRENCIES["EUR"].card_maximum == 99_999_999


@pytest.mark.parametrize(("code", "minimum"), [
    ("USD", 50), ("EUR", 50), ("GBP", 30), ("JPY", 50), ("HUF", 17500), ("CZK", 1500),
    ("HKD", 400), ("MXN", 1000), ("THB", 1000), ("AED", 200), ("DKK", 250),
    ("ISK", None), ("KES", None), ("TND", None),
])
def test_documented_card_minimums_and_undocumented_ones_are_unknown(code: str, minimum: int | None) -> None:
    assert CURRENCIES[code].card_minimum == minimum


# --- validity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("currency", CARD, ids=ids)
def test_the_card_minimum_is_itself_valid_and_one_step_below_it_is_not(currency: Currency) -> None:
    smallest = currency.card_minimum or currency.step
    assert smallest % currency.step == 0
    assert currency.problem(smallest, card=True) is None
    if currency.card_minimum is not None:
        below = currency.problem(smallest - currency.step, card=True)
        assert below is not None
        # cash rides never reach Stripe: only representability applies
        assert smallest - currency.step == 0 or currency.problem(smallest - currency.step, card=False) is None


@pytest.mark.parametrize("currency", ALL, ids=ids)
def test_an_amount_off_the_step_is_refused_for_cash_and_card(currency: Currency) -> None:
    if currency.step == 1:
        assert currency.problem(12_345_671, card=False) is None
        return
    for card in (True, False):
        problem = currency.problem(12_345_671, card=card)
        assert problem is not None and f"multiple of {currency.step}" in problem


def test_problems_read_as_a_reason() -> None:
    assert CURRENCIES["TND"].problem(12345, card=True) == \
        "must be a multiple of 10: TND is charged in steps of 0.010 TND"
    assert CURRENCIES["ISK"].problem(50050, card=False) == \
        "must be a multiple of 100: ISK is charged in steps of 1 ISK"
    assert CURRENCIES["EUR"].problem(49, card=True) == \
        "is below Stripe's minimum card charge of 0.50 EUR (50)"
    assert CURRENCIES["EUR"].problem(100_000_000, card=True) == \
        "is above Stripe's maximum card charge (99999999)"
    assert CURRENCIES["EUR"].problem(49, card=False) is None
    assert CURRENCIES["EUR"].problem(0, card=False) == "must be positive"


# --- rounding --------------------------------------------------------------------------------------
RATES = [Decimal("0.15"), Decimal("0.2"), Decimal("0.125"), Decimal("0.0333"), Decimal("0.999")]
AMOUNTS = [1, 7, 99, 100, 999, 1_000, 12_340, 50_000, 99_999_999]


@pytest.mark.parametrize("currency", ALL, ids=ids)
def test_rounding_down_gives_a_valid_amount_never_above_the_exact_share(currency: Currency) -> None:
    for amount in AMOUNTS:
        valid = currency.floor(amount)  # a fare rounded to the currency's step
        for rate in RATES:
            share = currency.floor(Decimal(valid) * rate)
            assert share % currency.step == 0
            assert share <= Decimal(valid) * rate < share + currency.step


@pytest.mark.parametrize("currency", ALL, ids=ids)
def test_rounding_a_ratio_up_gives_a_valid_amount_never_below_it(currency: Currency) -> None:
    for numerator in (0, 1, 149, 150, 1_851 * 5_000, 10**12 + 7):
        for denominator in (1, 3, 12_340):
            value = currency.ceil_ratio(numerator, denominator)
            assert value % currency.step == 0
            assert value - currency.step < Decimal(numerator) / denominator <= value


# --- display ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("currency", ALL, ids=ids)
def test_every_valid_amount_is_displayed_exactly_and_reads_back(currency: Currency) -> None:
    for amount in AMOUNTS:
        valid = currency.floor(amount) or currency.step
        shown = currency.display(valid)
        assert parse(shown, currency) == valid, shown
        decimals = len(shown.split(" ")[0].partition(".")[2])
        assert decimals == currency.display_exponent, shown


@pytest.mark.parametrize(("code", "amount", "shown"), [
    ("EUR", 2500, "25.00 EUR"), ("JPY", 2500, "2500 JPY"), ("TND", 12340, "12.340 TND"),
    ("ISK", 50000, "500 ISK"), ("UGX", 500, "5 UGX"), ("MGA", 500, "500 MGA"),
    ("HUF", 17500, "175.00 HUF"), ("CLF", 12345, "1.2345 CLF"), ("USD", 5, "0.05 USD"),
    ("ISK", 50050, "500.50 ISK"),  # not a valid amount: shown with all its decimals, never rounded
])
def test_amounts_read_as_people_write_them(code: str, amount: int, shown: str) -> None:
    assert CURRENCIES[code].display(amount) == shown
