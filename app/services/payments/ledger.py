"""The ledger: append-only money entries, each written once by its dedupe key, and what they add up
to (a ride's balance with Stripe, the platform's fee and refunds, a driver's earnings).

For every card ride the entries other than `cash_commission_owed` sum to what Stripe captured minus
what it refunded (`ledger_balance`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from models import LedgerEntry, LedgerKind, Payment


@dataclass(frozen=True)
class Entry:
    """One money movement of a payment's ride, to be written once (by `key`)."""

    kind: LedgerKind
    amount: int
    key: str
    #: The Stripe object behind it (PaymentIntent, charge), when there is one.
    reference: str | None


@dataclass(frozen=True)
class PlatformTotals:
    """The fee the platform took on a ride, and what of it it gave back so far (both ≥ 0)."""

    fee: int = 0
    refunded: int = 0

    def plus(self, entries: Iterable[Entry]) -> PlatformTotals:
        """These totals once `entries` (not yet in the ledger) are written too."""
        fee, refunded = self.fee, self.refunded
        for entry in entries:
            if entry.kind == LedgerKind.PLATFORM_COMMISSION:
                fee += entry.amount
            elif entry.kind == LedgerKind.PLATFORM_REFUND:
                refunded -= entry.amount
        return PlatformTotals(fee=fee, refunded=refunded)


def write(session: Session, payment: Payment, entries: Iterable[Entry]) -> None:
    """Write the entries of the payment's ride; one already written (same key) is left as it is."""
    for entry in entries:
        session.execute(insert(LedgerEntry).values(
            ride_id=payment.ride_id, booking_id=payment.booking_id, driver_id=payment.driver_id,
            kind=entry.kind.value, amount=entry.amount, currency=payment.currency, reference=entry.reference,
            dedupe_key=entry.key,
        ).on_conflict_do_nothing(index_elements=["dedupe_key"]))


def platform_totals(session: Session, payment: Payment) -> PlatformTotals:
    """(the fee the platform took, what of it was refunded so far), from the ledger of the payment's
    ride or booking."""
    def total(kind: LedgerKind) -> Any:
        return func.coalesce(func.sum(case((LedgerEntry.kind == kind.value, LedgerEntry.amount),
                                           else_=0)), 0)

    fee, refunded = session.execute(
        select(total(LedgerKind.PLATFORM_COMMISSION), total(LedgerKind.PLATFORM_REFUND))
        .where(LedgerEntry.ride_id == payment.ride_id if payment.ride_id is not None
               else LedgerEntry.booking_id == payment.booking_id)
    ).one()
    return PlatformTotals(fee=int(fee), refunded=-int(refunded))


def ledger_balance(session: Session, ride_id: uuid.UUID) -> int:
    """The sum of a ride's money entries (cash commission owed excluded): Stripe's net capture."""
    return int(session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.ride_id == ride_id, LedgerEntry.kind != LedgerKind.CASH_COMMISSION_OWED.value)
    ) or 0)


# --- a driver's earnings ----------------------------------------------------------------------
@dataclass(frozen=True)
class Earnings:
    totals: list[dict[str, Any]]
    entries: list[LedgerEntry]


_DRIVER_KINDS = [LedgerKind.DRIVER_EARNING, LedgerKind.DRIVER_REFUND, LedgerKind.CASH_COMMISSION_OWED]


async def earnings(session: AsyncSession, driver_id: uuid.UUID, *, limit: int = 100) -> Earnings:
    """Per currency: earned, refunded, cash commission owed and the net; and the latest entries."""
    sums = (await session.execute(
        select(LedgerEntry.currency, LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .where(LedgerEntry.driver_id == driver_id).group_by(LedgerEntry.currency, LedgerEntry.kind)
    )).all()
    by_currency: dict[str, dict[str, int]] = {}
    for currency, kind, total in sums:
        by_currency.setdefault(currency, {})[kind] = int(total)
    totals = []
    for currency, kinds in sorted(by_currency.items()):
        earned = kinds.get(LedgerKind.DRIVER_EARNING, 0)
        refunded = -kinds.get(LedgerKind.DRIVER_REFUND, 0)
        owed = kinds.get(LedgerKind.CASH_COMMISSION_OWED, 0)
        totals.append({"currency": currency, "earnings": earned, "refunds": refunded,
                       "cashCommissionOwed": owed, "net": earned - refunded - owed})
    entries = list((await session.scalars(
        select(LedgerEntry).where(LedgerEntry.driver_id == driver_id, LedgerEntry.kind.in_(_DRIVER_KINDS))
        .order_by(LedgerEntry.id.desc()).limit(limit)
    )).all())
    return Earnings(totals=totals, entries=entries)
