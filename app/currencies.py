"""Every ISO 4217 currency we take, and what an `amount` in it means (pure data, no I/O).

**Minor units.** Everywhere in our API and database (bids, payments, the ledger, `payment:update`)
money is an integer in the unit Stripe's `amount` expects, because the fare goes to Stripe as it
is. `exponent` is the number of decimals in that integer:
- most currencies: the ISO 4217 minor unit, `2500 EUR` is 25.00 EUR;
- Stripe's zero-decimal currencies: whole units, `2500 JPY` is 2500 yen. MGA is one of them
  although ISO gives it two decimals: `500 MGA` is 500 ariary;
- Stripe's three-decimal currencies (BHD JOD KWD OMR TND): `12340 TND` is 12.340 TND, and Stripe
  needs the last digit to be 0, so amounts are multiples of 10 (`step`);
- ISK and UGX: no decimals in ISO, but Stripe keeps two for backwards compatibility and takes whole
  units only, so `50000 ISK` is 500 ISK and amounts are multiples of 100. (Stripe's page lists UGX
  among its zero-decimal currencies too; its special cases, its error message "Currency UGX has
  become effectively zero-decimal and charged amounts must be evenly divisible by 100" and what
  integrators observed say two decimals, so two it is.)
- HUF and TWD: two decimals, any amount can be charged; Stripe's manual *payouts* in them must be
  whole units (`payout_step` 100). We make no manual payouts (Connect pays drivers out), so no
  charge, fee or refund is refused for it;
- ISO currencies Stripe does not charge (IQD, LYD, CLF, ...): the ISO minor unit; cash rides only.

**Display** (`display`): people read the ISO number of decimals, except where Stripe's unit is
coarser (MGA): `min(iso_exponent, exponent)` decimals, so `50000 ISK` reads "500 ISK" and
`12340 TND` "12.340 TND". An amount with a remainder at that precision (never a valid one) is shown
with all its decimals rather than rounded.

**Card limits.** `card_minimum` is Stripe's documented minimum charge for a charge settled in the
same currency (USD 0.50, EUR 0.50, GBP 0.30, JPY 50, ...). For the other currencies Stripe's rule is
"the equivalent of the settlement currency's minimum" at the day's exchange rate, which a pure table
can't hold: a fixed guess would refuse honest fares or pass ones Stripe refuses, so it is `None`
(unknown) and Stripe itself refuses a hold that is too small. `card_maximum` is Stripe's technical
limit: eight digits, twelve for IDR.

Sources: Stripe, "Supported currencies" (https://docs.stripe.com/currencies: presentment
currencies, zero-decimal, three-decimal, special cases, minimum and maximum charge amounts);
Stripe support, "Deprecation of fractional ISK charges and refunds"; ISO 4217 list one as published
in iso-codes / pycountry 26.2.16 (BGN, HRK, ANG, CUC, SLL and ZWL are withdrawn; codes with no minor
unit, such as XAU or XDR, are not money here).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Final


def _codes(text: str) -> tuple[str, ...]:
    """Codes written as words (a table reads better than 164 quoted strings)."""
    return tuple(text.split())


#: ISO 4217 list one, every code with a minor unit.
_ISO_CODES: Final = _codes("""
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX
USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
""")
#: ISO minor units other than 2.
_ISO_EXPONENTS: Final = {
    **dict.fromkeys(_codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"), 0),
    **dict.fromkeys(_codes("BHD IQD JOD KWD LYD OMR TND"), 3),
    **dict.fromkeys(_codes("CLF UYW"), 4),
}

#: Stripe's presentment currencies (its page lists ANG, BGN and STD too: no longer ISO codes).
_STRIPE_CODES: Final = frozenset(_codes("""
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CVE CZK DJF DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD GNF GTQ GYD HKD
HNL HTG HUF IDR ILS INR ISK JMD JOD JPY KES KGS KHR KMF KRW KWD KYD KZT LAK LBP LKR LRD LSL MAD
MDL MGA MKD MMK MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR
PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SEK SGD SHP SLE SOS SRD SZL THB TJS TND TOP TRY TTD TWD
TZS UAH UGX USD UYU UZS VND VUV WST XAF XCD XOF XPF YER ZAR ZMW
"""))
_STRIPE_ZERO_DECIMAL: Final = frozenset(
    _codes("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF"))
_STRIPE_THREE_DECIMAL: Final = frozenset(_codes("BHD JOD KWD OMR TND"))
#: Whole units only, written with two decimals (Stripe's special cases).
_STRIPE_WHOLE_IN_HUNDREDTHS: Final = frozenset({"ISK", "UGX"})
#: Two decimals for charges, whole units for manual payouts (Stripe's special cases).
_STRIPE_WHOLE_PAYOUTS: Final = frozenset({"HUF", "TWD"})
#: Stripe's documented minimum charge amounts, in major units.
_STRIPE_MINIMUMS: Final = {
    "USD": "0.50", "AED": "2.00", "AUD": "0.50", "BRL": "0.50", "CAD": "0.50", "CHF": "0.50",
    "CZK": "15.00", "DKK": "2.50", "EUR": "0.50", "GBP": "0.30", "HKD": "4.00", "HUF": "175.00",
    "INR": "0.50", "JPY": "50", "MXN": "10", "MYR": "2", "NOK": "3.00", "NZD": "0.50", "PLN": "2.00",
    "RON": "2.00", "SEK": "3.00", "SGD": "0.50", "THB": "10",
}
_EIGHT_DIGITS: Final = 99_999_999
_TWELVE_DIGITS: Final = 999_999_999_999


@dataclass(frozen=True, slots=True)
class Currency:
    """One currency: how many decimals an `amount` has and which amounts Stripe takes."""

    code: str
    #: ISO 4217's minor unit.
    iso_exponent: int
    #: Decimals in our (and Stripe's) `amount`.
    exponent: int
    #: Every amount is a multiple of this.
    step: int = 1
    #: Stripe charges cards in it.
    card: bool = False
    #: Stripe's documented minimum card charge, in `amount` units; None where it is undocumented.
    card_minimum: int | None = None
    card_maximum: int = _EIGHT_DIGITS
    #: Stripe's manual payouts in it are multiples of this.
    payout_step: int = 1

    @property
    def display_exponent(self) -> int:
        return min(self.iso_exponent, self.exponent)

    def floor(self, value: Decimal | int) -> int:
        """The largest valid amount not above `value` (for a share rounded down; `value` >= 0)."""
        steps = (Decimal(value) / self.step).to_integral_value(rounding=ROUND_FLOOR)
        return int(steps) * self.step

    def ceil_ratio(self, numerator: int, denominator: int) -> int:
        """The smallest multiple of `step` not below `numerator / denominator`, exactly."""
        return -(-numerator // (denominator * self.step)) * self.step

    def problem(self, amount: int, *, card: bool) -> str | None:
        """Why `amount` is not a valid price in this currency (for a card charge), or None."""
        if amount <= 0:
            return "must be positive"
        if amount % self.step:
            return (f"must be a multiple of {self.step}: {self.code} is charged in steps of "
                    f"{self.display(self.step)}")
        if card and self.card_minimum is not None and amount < self.card_minimum:
            return (f"is below Stripe's minimum card charge of {self.display(self.card_minimum)} "
                    f"({self.card_minimum})")
        if card and amount > self.card_maximum:
            return f"is above Stripe's maximum card charge ({self.card_maximum})"
        return None

    def display(self, amount: int) -> str:
        """`12340` → `12.340 TND`, `2500` → `2500 JPY`, `50000` → `500 ISK` (see the module doc)."""
        digits = self.display_exponent
        if amount % 10 ** (self.exponent - digits):
            digits = self.exponent
        return f"{Decimal(amount).scaleb(-self.exponent):.{digits}f} {self.code}"


def _currency(code: str) -> Currency:
    iso = _ISO_EXPONENTS.get(code, 2)
    if code not in _STRIPE_CODES:
        return Currency(code, iso, iso)
    exponent, step = 2, 1
    if code in _STRIPE_ZERO_DECIMAL:
        exponent = 0
    elif code in _STRIPE_THREE_DECIMAL:
        exponent, step = 3, 10
    elif code in _STRIPE_WHOLE_IN_HUNDREDTHS:
        step = 100
    minimum = _STRIPE_MINIMUMS.get(code)
    return Currency(
        code, iso, exponent, step=step, card=True,
        card_minimum=int(Decimal(minimum).scaleb(exponent)) if minimum else None,
        card_maximum=_TWELVE_DIGITS if code == "IDR" else _EIGHT_DIGITS,
        payout_step=100 if code in _STRIPE_WHOLE_PAYOUTS else step,
    )


CURRENCIES: Final[dict[str, Currency]] = {code: _currency(code) for code in _ISO_CODES}


def lookup(code: str) -> Currency | None:
    """The currency with this ISO code (upper case), or None for a code we don't take."""
    return CURRENCIES.get(code)


def of(code: str) -> Currency:
    """The currency of a stored amount: the table's, or for a code it doesn't know (a row written
    before the table, a withdrawn currency) two decimals and no step, as amounts were read before."""
    return CURRENCIES.get(code.upper()) or Currency(code.upper(), iso_exponent=2, exponent=2)
