"""Shared set-up for the ride tests: a region, places at known distances, ride bodies."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from app.db import AsyncUnitOfWork
from models import Region
from tests.integration.conftest import own_session

#: Alexanderplatz, Berlin: the pickup of every test ride.
PICKUP = (52.5219, 13.4132)
REGION = "BER"


def offset_km(origin: tuple[float, float], east_km: float, north_km: float = 0.0) -> tuple[float, float]:
    """A point `east_km` east and `north_km` north of `origin` (good to metres at city scale)."""
    lat, lng = origin
    return (lat + north_km / 110.574, lng + east_km / (111.320 * math.cos(math.radians(lat))))


def ride_body(**overrides: Any) -> dict[str, Any]:
    drop = offset_km(PICKUP, 3.0, 1.0)
    body: dict[str, Any] = {
        "pickup": {"lat": PICKUP[0], "lng": PICKUP[1], "address": "Alexanderplatz 1"},
        "dropoff": {"lat": drop[0], "lng": drop[1]},
        "vehicleType": "van",
        "region": REGION,
        "paymentMethod": "cash",
    }
    body.update(overrides)
    return body


async def ensure_region(client: Any, code: str = REGION, currency: str = "EUR") -> None:
    async with own_session() as session:
        uow = AsyncUnitOfWork(session)
        await uow.session.execute(
            insert(Region).values(code=code, name=code, currency=currency, commission_rate=Decimal("0.15"))
            .on_conflict_do_nothing(index_elements=["code"])
        )
        await uow.commit()
