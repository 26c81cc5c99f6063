"""`farmctl demo seed`: a region, a customer and online drivers around a point, for a walkthrough.

Running it again reuses the same accounts (same emails and password) and moves the drivers back
to fresh positions, so it can be repeated whenever the demo drivers have gone stale.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import anyio.to_thread
from sqlalchemy import func, select

from app.db import AsyncUnitOfWork
from app.security import hash_password
from app.services.regions import set_region
from models import Driver, DriverAvailability, Role, User, VehicleType

DEMO_PASSWORD = "demo-password"
VEHICLES = ("van", "car", "truck", "motorbike")


@dataclass(frozen=True)
class DemoAccount:
    email: str
    role: str
    user_id: uuid.UUID
    vehicle_type: str | None = None
    lat: float | None = None
    lng: float | None = None


def scatter(lat: float, lng: float, radius_km: float, rng: random.Random) -> tuple[float, float]:
    """A uniformly random point within `radius_km` of (lat, lng)."""
    distance = radius_km * math.sqrt(rng.random())
    bearing = rng.random() * 2 * math.pi
    return (lat + distance * math.cos(bearing) / 110.574,
            lng + distance * math.sin(bearing) / (111.320 * math.cos(math.radians(lat))))


async def _account(uow: AsyncUnitOfWork, email: str, role: Role, name: str, password_hash: str) -> User:
    user = await uow.session.scalar(select(User).where(func.lower(User.email) == email))
    if user is None:
        user = User(id=uuid.uuid4(), email=email, password_hash=password_hash, full_name=name,
                    phone="+491700000000", role=role, created_at=datetime.now(UTC))
        uow.session.add(user)
        await uow.session.flush()
    return user


async def seed(uow: AsyncUnitOfWork, *, region: str, lat: float, lng: float, drivers: int,
               radius_km: float, index_later: Callable[[list[DemoAccount]], None],
               operator: str | None = None) -> list[DemoAccount]:
    """Create or refresh the demo accounts; `index_later` puts the drivers in the index after commit.
    The region it sets is audited as `operator`'s."""
    await set_region(uow, region, name=f"Demo {region}", currency="EUR", commission_rate=Decimal("0.15"),
                     operator=operator)
    password_hash = await anyio.to_thread.run_sync(hash_password, DEMO_PASSWORD)
    rng = random.Random(f"{region}:{lat}:{lng}")
    customer = await _account(uow, "demo-customer@example.com", Role.CUSTOMER, "Demo Customer", password_hash)
    accounts = [DemoAccount("demo-customer@example.com", "customer", customer.id)]
    now = datetime.now(UTC)
    for number in range(1, drivers + 1):
        email = f"demo-driver-{number}@example.com"
        user = await _account(uow, email, Role.DRIVER, f"Demo Driver {number}", password_hash)
        vehicle = VEHICLES[(number - 1) % len(VEHICLES)]
        d_lat, d_lng = scatter(lat, lng, radius_km, rng)
        driver = await uow.session.get(Driver, user.id)
        if driver is None:
            driver = Driver(user_id=user.id, vehicle_type=VehicleType(vehicle))
            uow.session.add(driver)
        driver.availability = DriverAvailability.ONLINE
        driver.last_lat, driver.last_lng, driver.last_seen_at = d_lat, d_lng, now
        accounts.append(DemoAccount(email, "driver", user.id, driver.vehicle_type.value, d_lat, d_lng))
    uow.after_commit(lambda: index_later(accounts))
    return accounts
