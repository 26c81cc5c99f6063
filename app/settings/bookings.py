"""Settings of time-slot bookings: how long a slot is held, the cancellation policy, reminders."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.settings.declare import NOT_NEGATIVE, POSITIVE, Check, setting
from app.settings.market import FRACTION

REMINDERS = Check(lambda offsets: all(s > 0 for s in offsets),
                  "{name} must be positive numbers of seconds before the start, e.g. 86400,3600")


@dataclass(frozen=True)
class BookingSettings:
    """Holds, cancellations and reminders of time-slot bookings (slot length and buffer are data:
    the region's, or the provider's own)."""

    hold_ttl_s: int = setting(
        "BOOKINGS_HOLD_TTL", 600, check=POSITIVE,
        doc="how long a slot is held for the customer to pay (`holdExpiresAt`); an unconfirmed hold "
            "is released then, with its card hold")
    free_cancellation_s: int = setting(
        "BOOKINGS_FREE_CANCELLATION", 24 * 3600, check=NOT_NEGATIVE,
        doc="a customer cancelling at least this long before the start pays nothing; later, the late "
            "cancellation fee is taken from the card hold")
    late_cancellation_fee_rate: Decimal = setting(
        "BOOKINGS_LATE_CANCELLATION_FEE_RATE", Decimal("0.50"), check=FRACTION,
        doc="share of the price captured when a customer cancels a confirmed card booking late")
    no_show_fee_rate: Decimal = setting(
        "BOOKINGS_NO_SHOW_FEE_RATE", Decimal("1.00"), check=FRACTION,
        doc="share of the price captured when the provider marks a card booking a no-show")
    reminders_s: tuple[int, ...] = setting(
        "BOOKINGS_REMINDERS", (24 * 3600, 3600), check=REMINDERS,
        doc="when reminders go out, in seconds before the start (one message each, only to bookings "
            "still confirmed; one already past at confirmation is not sent)")
    holds_per_customer: int = setting(
        "BOOKINGS_HOLDS_PER_CUSTOMER", 5, check=NOT_NEGATIVE,
        doc="how many unconfirmed holds one customer may have at once (0: no cap), so nobody keeps a "
            "provider's calendar from others; one more is 409 `CONFLICT`, reason `HOLD_LIMIT`")
    horizon_days: int = setting(
        "BOOKINGS_HORIZON_DAYS", 180, check=POSITIVE,
        doc="how far ahead a slot may be booked, in days")
    listing_max_days: int = setting(
        "BOOKINGS_LISTING_MAX_DAYS", 31, check=POSITIVE,
        doc="the longest `from`-`to` span one slots listing may ask for, in days")
