"""`POST /rides` coalesced: rides that arrive together are written by one statement, each request
still answered by its own ride's fate (real PostgreSQL, the web's real statement pool)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.adapters.token_store import UserSnapshot
from app.db import libpq_dsn
from app.errors import Conflict, ServiceUnavailable, ValidationFailed
from app.security import AccessClaims
from app.services.access import Principal
from app.services.ride_creation import Place, RideRequest, RideWriter, create_ride, ride_row
from app.settings import Settings
from app.statements import StatementPool
from models import Region, Role, User
from models.ride_states import CUSTOMER
from tests.integration.workers_support import db_fixture

__all__ = ["db_fixture"]


def request(region: str = "BER") -> RideRequest:
    return RideRequest(pickup=Place(52.52, 13.40, "Alexanderplatz"), dropoff=Place(52.50, 13.45),
                       vehicle_type="van", region=region, payment_method="cash")


def customers(db: sessionmaker[Session], count: int) -> list[Principal]:
    ids = [uuid.uuid4() for _ in range(count)]
    with db.begin() as session:
        if session.get(Region, "BER") is None:
            session.add(Region(code="BER", name="Berlin", currency="EUR", commission_rate=Decimal("0.15")))
        session.add_all(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", full_name="C",
                             phone="+491701234567", role=Role.CUSTOMER) for user_id in ids)
    return [principal(user_id) for user_id in ids]


def principal(user_id: uuid.UUID) -> Principal:
    claims = AccessClaims(user_id=user_id, role=CUSTOMER, jti="t", session_id=uuid.uuid4(), generation=0,
                          issued_at=0, expires_at=2**31)
    user = UserSnapshot(id=user_id, email=f"{user_id}@example.com", full_name="C", phone="+491701234567",
                        role=CUSTOMER, vehicle_type=None, whatsapp_opt_in=False, is_active=True, generation=0,
                        created_at=datetime.now(UTC), phone_verified=True)
    return Principal(claims=claims, user=user)


def counts(settings: Settings) -> dict[str, int]:
    sql = """SELECT (SELECT count(*) FROM rides), (SELECT count(*) FROM ride_history),
                    (SELECT count(*) FROM notifications),
                    (SELECT count(*) FROM jobs WHERE actor = 'dispatch.step'),
                    (SELECT count(*) FROM jobs WHERE actor = 'notifications.send')"""
    with psycopg.connect(libpq_dsn(settings.db.url), autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return dict(zip(("rides", "history", "notifications", "steps", "sends"), row, strict=True))


@pytest.fixture
async def pool(clean: None, settings: Settings) -> AsyncIterator[StatementPool]:
    statements = StatementPool(settings.db)
    yield statements
    await statements.close()


def capped(settings: Settings, cap: int) -> Settings:
    limits = dataclasses.replace(settings.limits, open_rides_per_customer=cap)
    return dataclasses.replace(settings, limits=limits)


async def test_rides_arriving_together_share_statements_and_each_is_written_whole(
    pool: StatementPool, settings: Settings, db: sessionmaker[Session],
) -> None:
    settings = capped(settings, 0)
    writer = RideWriter(pool, settings)
    people = customers(db, 50)

    views = await asyncio.gather(*(create_ride(writer, p, request(), settings=settings) for p in people))

    assert len({ride.id for ride, _ in views}) == 50
    assert counts(settings) == {"rides": 50, "history": 50, "notifications": 50, "steps": 50, "sends": 50}
    # 50 rides in a handful of statements: the first few went alone, the rest waited for one
    assert writer.statements_run <= 6
    with psycopg.connect(libpq_dsn(settings.db.url), autocommit=True) as conn:
        mine = conn.execute("SELECT customer_id FROM rides WHERE id = %s", (views[7][0].id,)).fetchone()
        step = conn.execute("SELECT args FROM jobs WHERE actor = 'dispatch.step' AND args->>0 = %s",
                            (str(views[7][0].id),)).fetchone()
    assert mine == (people[7].id,) and step == ([str(views[7][0].id), 0],)


async def test_an_unknown_region_fails_its_own_request_only(
    pool: StatementPool, settings: Settings, db: sessionmaker[Session],
) -> None:
    settings = capped(settings, 0)
    writer = RideWriter(pool, settings)
    people = customers(db, 4)
    regions = ["BER", "NOPE", "BER", "BER"]

    results = await asyncio.gather(*(create_ride(writer, p, request(r), settings=settings)
                                     for p, r in zip(people, regions, strict=True)), return_exceptions=True)

    assert isinstance(results[1], ValidationFailed)
    assert results[1].details == {"region": "unknown region code"}
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 1)
    assert counts(settings)["rides"] == 3


async def test_under_a_cap_exactly_the_cap_of_one_customers_rides_in_one_statement_are_written(
    pool: StatementPool, settings: Settings, db: sessionmaker[Session],
) -> None:
    settings = capped(settings, 3)
    writer = RideWriter(pool, settings)
    greedy, other = customers(db, 2)
    asks = [greedy] * 7 + [other] * 2

    results: list[Any] = await asyncio.gather(*(create_ride(writer, p, request(), settings=settings)
                                                for p in asks), return_exceptions=True)

    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(refused) == 4 and all(r.details == {"reason": "OPEN_RIDE_LIMIT", "limit": 3} for r in refused)
    assert all(not isinstance(r, BaseException) for r in results[7:])  # the other customer is not held up
    assert counts(settings)["rides"] == 5


async def test_the_statement_run_again_after_a_dropped_connection_writes_nothing_twice(
    pool: StatementPool, settings: Settings, db: sessionmaker[Session],
) -> None:
    settings = capped(settings, 0)
    writer = RideWriter(pool, settings)
    person, = customers(db, 1)
    row = ride_row(uuid.uuid4(), person.id, request(), datetime.now(UTC))

    first = await writer._execute([row])
    again = await writer._execute([row])  # what the pool's retry does when the answer was lost

    assert first == again and first[0].written
    assert counts(settings) == {"rides": 1, "history": 1, "notifications": 1, "steps": 1, "sends": 1}


async def test_a_failed_statement_fails_every_request_it_held_and_writes_nothing(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = dataclasses.replace(settings.db, url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test",
                             pool_timeout_s=1.0, connect_timeout_s=1.0)
    pool = StatementPool(db)
    writer = RideWriter(pool, capped(settings, 0))
    caller = principal(uuid.uuid4())
    try:
        results = await asyncio.gather(*(create_ride(writer, caller, request(), settings=settings)
                                         for _ in range(5)), return_exceptions=True)
    finally:
        await pool.close()
    assert all(isinstance(r, ServiceUnavailable) for r in results)
