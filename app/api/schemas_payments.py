"""Bodies of the payment routes (camelCase; no unknown fields)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.api.schemas import Request, Response
from app.services.payments import Earnings


class OnboardOut(Response):
    url: str


class IntentOut(Response):
    client_secret: str
    status: str


class Money(Response):
    amount: int
    currency: str


class LedgerEntryOut(Response):
    id: int
    #: The ride the entry is of, or (a time-slot booking's entry) null with `bookingId` set.
    ride_id: uuid.UUID | None
    kind: str
    amount: Money
    reference: str | None
    at: datetime
    booking_id: uuid.UUID | None = None


class EarningsTotal(Response):
    currency: str
    earnings: int
    refunds: int
    cash_commission_owed: int
    net: int


class EarningsOut(Response):
    """Totals per currency (net = earnings - refunds - cash commission owed) and the newest entries."""

    totals: list[EarningsTotal]
    items: list[LedgerEntryOut]
    next_cursor: str | None = None

    @classmethod
    def of(cls, earnings: Earnings) -> EarningsOut:
        return cls(
            totals=[EarningsTotal(currency=t["currency"], earnings=t["earnings"], refunds=t["refunds"],
                                  cash_commission_owed=t["cashCommissionOwed"], net=t["net"])
                    for t in earnings.totals],
            items=[LedgerEntryOut(id=e.id, ride_id=e.ride_id, kind=e.kind,
                                  amount=Money(amount=e.amount, currency=e.currency),
                                  reference=e.reference, at=e.created_at, booking_id=e.booking_id)
                   for e in earnings.entries],
        )


class RefundIn(Request):
    """Leave `amount` out to refund everything captured and not yet refunded."""

    amount: Annotated[int, msgspec.Meta(gt=0)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class RefundOut(Response):
    ride_id: uuid.UUID
    request_id: str
    status: str
