"""The money rules of payments, pure: commission, cancellation fee, and who gives back a refund.

Amounts are in the unit Stripe's `amount` expects; every result is a valid amount of the currency
(`app.currencies`: a multiple of 10 in TND, of 100 in ISK).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from app import currencies
from app.settings import Settings
from models import RideStatus

#: Cancelled from one of these, a card ride pays the cancellation fee (the driver had set off).
FEE_AFTER: Final = frozenset({RideStatus.DRIVER_ARRIVING, RideStatus.PICKUP_ARRIVED, RideStatus.LOADING,
                              RideStatus.IN_TRANSIT, RideStatus.DROPOFF_ARRIVED})


def commission(amount: int, rate: Decimal, currency: str) -> int:
    """The platform's share of `amount`, rounded down to a valid amount of the currency (a multiple
    of 10 in TND, of 100 in ISK): never more than the stated rate; the driver gets the rest."""
    return currencies.of(currency).floor(Decimal(amount) * rate)


def cancellation_fee(amount: int, rate: Decimal, currency: str) -> int:
    """The fee captured from the hold of a ride cancelled late, rounded down to a valid amount."""
    return currencies.of(currency).floor(Decimal(amount) * rate)


def cancellation_fee_rate(settings: Settings) -> Decimal:
    """The share of the fare a late cancellation costs (the one place that reads the setting)."""
    return settings.pricing.cancellation_fee_rate


def fee_due(cancelled_from: str | None) -> bool:
    """Whether a ride cancelled from `cancelled_from` (a `RideStatus` value) pays the fee."""
    return cancelled_from in {status.value for status in FEE_AFTER}


def late_cancellation_fee(amount: int, currency: str, cancelled_from: str | None, rate: Decimal) -> int:
    """What a card ride's cancellation costs: nothing before the driver set off, else the fee."""
    return cancellation_fee(amount, rate, currency) if fee_due(cancelled_from) else 0


def platform_refunded(fee: int, captured: int, refunded: int, currency: str) -> int:
    """The platform's part of the first `refunded` of `captured` (both cumulative): its fee's share,
    `fee * refunded / captured`, rounded UP to a valid amount, so that the platform never keeps more
    than its rate of what was finally paid, and never gives back more than it took (at a full refund
    it is the whole fee). Computed from totals, so a run of partial refunds never drifts."""
    if captured <= 0 or fee <= 0 or refunded <= 0:
        return 0
    share = currencies.of(currency).ceil_ratio(fee * min(refunded, captured), captured)
    return min(share, fee)


@dataclass(frozen=True)
class RefundSplit:
    driver: int
    platform: int


def split_refund(*, refunded_before: int, refunded_total: int, captured: int, fee: int,
                 platform_before: int, currency: str) -> RefundSplit:
    """Who gives back the step from `refunded_before` to `refunded_total`: the platform what
    `platform_refunded` of the new total still asks of it beyond `platform_before` (what it already
    gave back), the driver the rest."""
    step = refunded_total - refunded_before
    due = platform_refunded(fee, captured, refunded_total, currency)
    platform = min(step, max(0, due - platform_before))
    return RefundSplit(driver=step - platform, platform=platform)
