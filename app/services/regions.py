"""Regions are data: created or updated by `farmctl regions set`, listed publicly."""

from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import currencies
from app.db import AsyncUnitOfWork
from app.errors import ValidationFailed
from app.logging import get_logger
from app.services import audit
from models import Region

log = get_logger("regions")

_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")


async def list_regions(session: AsyncSession) -> list[Region]:
    return list((await session.scalars(select(Region).order_by(Region.code))).all())


async def set_region(uow: AsyncUnitOfWork, code: str, *, name: str, currency: str,
                     commission_rate: Decimal, operator: str | None = None, slot_minutes: int | None = None,
                     slot_buffer_minutes: int | None = None) -> Region:
    """Create the region or update it in place; audited. The currency must be in the currency table;
    one Stripe doesn't charge (IQD, CUP, ...) makes a cash-only region (card bids there are refused)."""
    if not _CODE.fullmatch(code):
        raise ValidationFailed("A region code is 1 to 16 letters, digits, '-' or '_'.",
                               details={"code": code})
    if not commission_rate.is_finite() or not Decimal(0) <= commission_rate < Decimal(1):
        raise ValidationFailed("The commission is a fraction in [0, 1).", details={"commission": "range"})
    currency = currency.upper()
    known = currencies.lookup(currency)
    if known is None:
        raise ValidationFailed(f"{currency} is not an ISO 4217 currency we take (app/currencies.py).",
                               details={"currency": "unknown ISO 4217 currency"})
    if not known.card:
        log.warning("region.cash_only_currency", region=code, currency=currency)
    slots = _slot_defaults(slot_minutes, slot_buffer_minutes)
    upsert = insert(Region).values(code=code, name=name, currency=currency,
                                   commission_rate=commission_rate, **slots)
    statement = upsert.on_conflict_do_update(
        index_elements=[Region.code],
        set_={"name": name, "currency": currency, "commission_rate": commission_rate, **slots},
    ).returning(Region)
    region = (await uow.session.execute(statement)).scalar_one()
    audit.record(uow.session, audit.Operator(role=audit.CLI, name=operator), "region.set",
                 target_type="region", target_id=code,
                 details={"name": name, "currency": currency, "commission": str(commission_rate), **slots})
    return region


def _slot_defaults(slot_minutes: int | None, buffer_minutes: int | None) -> dict[str, int]:
    """The region's slot length and buffer for time-slot bookings, where given (kept otherwise)."""
    given: dict[str, int] = {}
    if slot_minutes is not None:
        if not 5 <= slot_minutes <= 720:
            raise ValidationFailed("A slot lasts 5 to 720 minutes.", details={"slotMinutes": slot_minutes})
        given["slot_minutes"] = slot_minutes
    if buffer_minutes is not None:
        if not 0 <= buffer_minutes <= 240:
            raise ValidationFailed("A buffer is 0 to 240 minutes.", details={"bufferMinutes": buffer_minutes})
        given["slot_buffer_minutes"] = buffer_minutes
    return given
