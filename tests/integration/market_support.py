"""A small marketplace for ride tests: a region, people, rides, offers, bids, moves, and a tap on
the Socket.IO bus, all on the run's real PostgreSQL and Redis.

Offers are written straight into the database (as the dispatch worker would); everything a user
does goes through the HTTP API. The database is reached through an engine of our own: the app's
async engine lives in the test client's event loop (another thread), and using it from the test's
loop can lose a wake-up and hang (e.g. on SQLAlchemy's first-connect lock).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aredis
from litestar.testing.transport import TestClientTransport
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.keys import RedisKeys
from app.security import hash_password
from app.settings import Settings
from models import Bid, Driver, Offer, Region, RideEvent, Role, User
from tests.integration.conftest import PASSWORD, Accounts, Client, bearer, error_code

REGION = "BER"
CURRENCY = "EUR"
#: The driver's path after an accept, one step at a time.
DRIVER_STEPS = ("DRIVER_ARRIVING", "PICKUP_ARRIVED", "LOADING", "IN_TRANSIT", "DROPOFF_ARRIVED", "COMPLETED")


@dataclass(frozen=True)
class Person:
    id: str
    token: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the API error `code` with HTTP `status`; returns its `details`."""
    assert response.status_code == status, response.text
    assert error_code(response) == code, response.text
    details: dict[str, Any] = response.json()["error"]["details"] or {}
    return details


@dataclass(frozen=True)
class Call:
    """One HTTP request for `at_once`."""

    client: Client
    method: str
    url: str
    headers: dict[str, str]
    json: Any = None


async def at_once(calls: list[Call]) -> list[httpx.Response]:
    """Send the requests at the same moment, really concurrently, and return their responses.

    A test client answers each request through a blocking call into the app's own event loop, so
    `asyncio.gather` over it runs them one by one. Here each request has its own thread, all
    released together by a barrier, so the app's loop (one per client, as one per web process)
    runs them side by side.
    """
    barrier = threading.Barrier(len(calls))

    def send(call: Call) -> httpx.Response:
        transport = TestClientTransport(client=call.client, raise_server_exceptions=False)
        request = call.client.build_request(call.method, call.url, headers=call.headers, json=call.json)
        barrier.wait(timeout=30)
        response = transport.handle_request(request)
        response.read()
        return response

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, send, call) for call in calls)))


class Market:
    """Drives one API client through the ride flow; `close()` when done."""

    def __init__(self, api: Client, accounts: Accounts, settings: Settings) -> None:
        self.api = api
        self.accounts = accounts
        self._engine: Engine = create_engine(settings.db.url, pool_size=2)
        self.db: sessionmaker[Session] = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    # --- data set up directly ----------------------------------------------------------------------
    async def region(self, code: str = REGION, currency: str = CURRENCY) -> None:
        with self.db.begin() as session:
            session.add(Region(code=code, name=f"Region {code}", currency=currency,
                               commission_rate=Decimal("0.15")))

    async def region_currency(self, currency: str, code: str = REGION) -> None:
        """The region now charges in `currency` (as `farmctl regions set` would)."""
        with self.db.begin() as session:
            session.execute(update(Region).where(Region.code == code).values(currency=currency))

    async def offer(self, ride_id: str, driver: Person, *, expires_in: timedelta = timedelta(minutes=3),
                    round: int = 0) -> None:
        """Offer the ride to the driver, as `dispatch.step` does."""
        with self.db.begin() as session:
            session.add(Offer(ride_id=uuid.UUID(ride_id), driver_id=uuid.UUID(driver.id), round=round,
                              distance_km=1.5, expires_at=datetime.now(UTC) + expires_in))

    # --- people ------------------------------------------------------------------------------------
    async def customer(self) -> Person:
        session = await self.accounts.register("customer")
        return Person(session["user"]["id"], session["accessToken"], "customer")

    async def driver(self, *, online: bool = True) -> Person:
        """A registered driver, online (as it is when offered rides) unless `online=False`."""
        session = await self.accounts.register("driver")
        driver = Person(session["user"]["id"], session["accessToken"], "driver")
        if online:
            response = await self.api.post("/api/v1/drivers/me/online", headers=driver.headers)
            assert response.status_code == 204, response.text
        return driver

    async def admin(self) -> Person:
        """An admin written straight into the database (as `farmctl users create-admin`), logged in."""
        email = self.accounts.fresh_email("admin")
        with self.db.begin() as session:
            session.add(User(id=uuid.uuid4(), email=email, password_hash=hash_password(PASSWORD),
                             full_name="An admin", phone="+4917000000001", role=Role.ADMIN,
                             created_at=datetime.now(UTC)))
        login = await self.accounts.session(email)
        return Person(login["user"]["id"], login["accessToken"], "admin")

    # --- what users do -----------------------------------------------------------------------------
    async def ride(self, customer: Person) -> dict[str, Any]:
        body = {"pickup": {"lat": 52.52, "lng": 13.405}, "dropoff": {"lat": 52.50, "lng": 13.42},
                "vehicleType": "van", "region": REGION, "paymentMethod": "cash"}
        response = await self.api.post("/api/v1/rides", json=body, headers=customer.headers)
        assert response.status_code == 201, response.text
        ride: dict[str, Any] = response.json()
        return ride

    async def bid(self, driver: Person, ride_id: str, *, amount: int = 2500, currency: str = CURRENCY,
                  eta_minutes: int = 7) -> httpx.Response:
        return await self.api.post(f"/api/v1/rides/{ride_id}/bids", headers=driver.headers,
                                   json={"price": {"amount": amount, "currency": currency},
                                         "etaMinutes": eta_minutes})

    async def offered_bid(self, driver: Person, ride_id: str, **fields: Any) -> dict[str, Any]:
        """Offer the ride to the driver and have it bid; returns the bid."""
        await self.offer(ride_id, driver)
        response = await self.bid(driver, ride_id, **fields)
        assert response.status_code == 201, response.text
        bid: dict[str, Any] = response.json()
        return bid

    async def bids(self, who: Person, ride_id: str) -> httpx.Response:
        return await self.api.get(f"/api/v1/rides/{ride_id}/bids", headers=who.headers)

    async def accept(self, who: Person, ride_id: str, bid_id: str) -> httpx.Response:
        return await self.api.post(self.accept_url(ride_id, bid_id), headers=who.headers)

    @staticmethod
    def accept_url(ride_id: str, bid_id: str) -> str:
        return f"/api/v1/rides/{ride_id}/bids/{bid_id}/accept"

    def bid_call(self, driver: Person, ride_id: str, *, amount: int = 2500) -> Call:
        return Call(self.api, "POST", f"/api/v1/rides/{ride_id}/bids", driver.headers,
                    {"price": {"amount": amount, "currency": CURRENCY}, "etaMinutes": 7})

    async def move(self, who: Person, ride_id: str, status: str) -> httpx.Response:
        return await self.api.post(f"/api/v1/rides/{ride_id}/status", json={"status": status},
                                   headers=who.headers)

    async def cancel(self, who: Person, ride_id: str, reason: str | None = None) -> httpx.Response:
        """Cancel with `{reason}`, or with no body at all when there is no reason."""
        body = {"reason": reason} if reason is not None else None
        return await self.api.post(f"/api/v1/rides/{ride_id}/cancel", json=body, headers=who.headers)

    async def read(self, who: Person, ride_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/rides/{ride_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        ride: dict[str, Any] = response.json()
        return ride

    async def assigned_ride(self, customer: Person, driver: Person) -> dict[str, Any]:
        """A ride of the customer with the driver's bid accepted (BID_ACCEPTED)."""
        ride = await self.ride(customer)
        bid = await self.offered_bid(driver, ride["id"])
        response = await self.accept(customer, ride["id"], bid["id"])
        assert response.status_code == 200, response.text
        accepted: dict[str, Any] = response.json()
        return accepted

    async def walk(self, driver: Person, ride_id: str, until: str) -> None:
        """The driver moves the ride step by step up to `until` (a status on its path)."""
        for step in DRIVER_STEPS[:DRIVER_STEPS.index(until) + 1]:
            response = await self.move(driver, ride_id, step)
            assert response.status_code == 200, response.text

    # --- what the database holds -------------------------------------------------------------------
    async def bid_statuses(self, ride_id: str) -> dict[str, str]:
        with self.db() as session:
            rows = session.execute(select(Bid.id, Bid.status).where(Bid.ride_id == uuid.UUID(ride_id))).all()
        return {str(bid_id): status.value for bid_id, status in rows}

    async def active_ride_of(self, driver: Person) -> str | None:
        with self.db() as session:
            active = session.scalar(
                select(Driver.active_ride_id).where(Driver.user_id == uuid.UUID(driver.id)))
        return str(active) if active else None

    async def history_rows(self, ride_id: str) -> list[tuple[str | None, str, str | None, str]]:
        with self.db() as session:
            rows = session.execute(
                select(RideEvent.from_status, RideEvent.to_status, RideEvent.actor_id, RideEvent.actor_role)
                .where(RideEvent.ride_id == uuid.UUID(ride_id)).order_by(RideEvent.id)).all()
        return [(before, after, str(actor) if actor else None, role) for before, after, actor, role in rows]


@dataclass(frozen=True)
class Emitted:
    event: str
    rooms: tuple[str, ...]
    payload: dict[str, Any]


class BusTap:
    """Listens to the Socket.IO Redis channel the publishers write to (python-socketio's JSON)."""

    def __init__(self, settings: Settings) -> None:
        self._client = aredis.Redis.from_url(settings.redis.url)
        self._channel = RedisKeys(settings.redis).socketio_channel()
        self._pubsub = self._client.pubsub()
        self._marker = f"tap-{uuid.uuid4()}"

    async def __aenter__(self) -> BusTap:
        await self._pubsub.subscribe(self._channel)
        confirmation = await self._pubsub.get_message(timeout=5)
        assert confirmation and confirmation["type"] == "subscribe", confirmation
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()

    async def until(self, event: str) -> list[Emitted]:
        """Every emit published so far, waiting (up to 30 s) until one of them is `event`.

        An effect committed to PostgreSQL is published just after the commit, so a test that saw
        the row waits here for its emit instead of assuming it is already on the bus.
        """
        seen: list[Emitted] = []
        async with asyncio.timeout(30):
            while True:
                seen += await self.emitted()
                if any(e.event == event for e in seen):
                    return seen
                await asyncio.sleep(0.02)

    async def emitted(self) -> list[Emitted]:
        """Every emit published so far: a marker published now arrives after all of them."""
        await self._client.publish(self._channel, msgspec.json.encode({"method": self._marker}))
        seen: list[Emitted] = []
        while True:
            item = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert item is not None, "the marker never came back"
            message = msgspec.json.decode(item["data"])
            if message.get("method") == self._marker:
                return seen
            if message.get("method") == "emit":
                room = message["room"]
                rooms = tuple(room) if isinstance(room, list) else (room,)
                seen.append(Emitted(message["event"], rooms, message["data"][0]))


@pytest.fixture
async def market(api: Client, accounts: Accounts, settings: Settings) -> AsyncIterator[Market]:
    """A market with its region; import it (and `customer`) into a test module to use it."""
    market = Market(api, accounts, settings)
    try:
        await market.region()
        yield market
    finally:
        market.close()


@pytest.fixture
async def customer(market: Market) -> Person:
    return await market.customer()
