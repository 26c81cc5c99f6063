"""The live map (`app/services/live_map.py`, `app/realtime/room_watch.py`): `GET /admin/map` and
the `map:ride` / `map:driver` events an admin's socket hears after `subscribe:map`.

Real PostgreSQL and Redis; the sockets talk to the web process's real ASGI app under uvicorn,
the people act through the API client (another web process, as behind a load balancer).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import socketio
from sqlalchemy import update

from app.adapters.driver_index import DriverIndexReader
from app.adapters.realtime import Publisher
from app.adapters.watched_rooms import CACHE_S
from app.keys import RedisKeys
from app.redis_conn import create_sync_redis
from app.services import stale_drivers
from app.settings import Settings
from models import Driver
from tests.integration.market_support import REGION, BusTap, Market, Person, assert_error, customer, market

__all__ = ["customer", "market"]

DEADLINE_S = 20.0
#: Inside the bounds of the market's rides (pickup 52.52/13.405, drop-off 52.50/13.42, padded).
IN_BERLIN = (52.51, 13.41)
MUNICH = (48.137, 11.575)


class Listener:
    """A Socket.IO client that keeps every event it receives, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.client.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def connect(self, web: str, person: Person) -> Listener:
        await self.client.connect(web, transports=["websocket"], auth={"token": person.token},
                                  socketio_path="socket.io", wait_timeout=DEADLINE_S)
        return self

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call(event, data or {}, timeout=DEADLINE_S)
        return ack

    async def until(self, event: str, **fields: Any) -> dict[str, Any]:
        """The first `event` received whose payload has `fields` (waiting for it)."""
        async with asyncio.timeout(DEADLINE_S):
            while True:
                for name, data in self.events:
                    if name == event and all(data.get(k) == v for k, v in fields.items()):
                        return dict(data)
                await asyncio.sleep(0.02)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
async def listeners() -> AsyncIterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        if listener.client.connected:
            await listener.client.disconnect()


async def listen(web: str, listeners: list[Listener], person: Person) -> Listener:
    listener = await Listener().connect(web, person)
    listeners.append(listener)
    return listener


async def report(market: Market, driver: Person, point: tuple[float, float]) -> None:
    response = await market.api.put("/api/v1/drivers/me/location", json={"lat": point[0], "lng": point[1]},
                                    headers=driver.headers)
    assert response.status_code == 204, response.text


async def watching(listener: Listener, region: str = REGION) -> None:
    """Subscribe to the region's map and give every publisher time to see it (`CACHE_S`)."""
    assert await listener.call("subscribe:map", {"region": region}) == {"ok": True}
    await asyncio.sleep(CACHE_S + 0.2)


async def test_an_admin_watching_a_region_sees_its_rides_and_drivers_move_and_nobody_else_does(
    web: str, market: Market, customer: Person, listeners: list[Listener]
) -> None:
    # Given a region with a ride (its bounds), an online driver, and two admins on sockets: one
    # watching the region's map, one not
    first = await market.ride(customer)
    driver = await market.driver()
    watcher = await listen(web, listeners, await market.admin())
    bystander = await listen(web, listeners, await market.admin())
    await watching(watcher)

    # When the driver reports a position in the region
    await report(market, driver, IN_BERLIN)
    # Then the watcher sees it on the map
    moved = await watcher.until("map:driver", driverId=driver.id)
    assert moved == {"driverId": driver.id, "region": REGION, "lat": IN_BERLIN[0], "lng": IN_BERLIN[1],
                     "online": True, "at": moved["at"]}

    # When a ride is created, accepted and moved
    ride = await market.assigned_ride(customer, driver)
    assert (await market.move(driver, ride["id"], "DRIVER_ARRIVING")).status_code == 200
    # Then each step is on the map, with where the ride goes and who drives it
    created = await watcher.until("map:ride", rideId=ride["id"], status="PENDING_BIDS")
    assert created == {"rideId": ride["id"], "region": REGION, "status": "PENDING_BIDS",
                       "pickup": {"lat": 52.52, "lng": 13.405, "address": None},
                       "dropoff": {"lat": 52.50, "lng": 13.42, "address": None}, "driverId": None,
                       "at": created["at"]}
    accepted = await watcher.until("map:ride", rideId=ride["id"], status="BID_ACCEPTED")
    assert accepted["driverId"] == driver.id
    await watcher.until("map:ride", rideId=ride["id"], status="DRIVER_ARRIVING")

    # When the driver reports from outside the region, then goes offline
    await report(market, driver, MUNICH)
    assert (await market.api.post("/api/v1/drivers/me/offline", headers=driver.headers)).status_code == 204
    await report(market, driver, IN_BERLIN)  # offline: not on the map
    await market.cancel(customer, first["id"])
    await watcher.until("map:ride", rideId=first["id"], status="CANCELLED")

    # Then the watcher heard only map events: none from Munich, none for the offline report
    assert set(watcher.names()) == {"map:ride", "map:driver"}
    assert [data["online"] for name, data in watcher.events if name == "map:driver"] == [True]
    assert [(d["rideId"], d["status"]) for n, d in watcher.events if n == "map:ride"] == [
        (ride["id"], "PENDING_BIDS"), (ride["id"], "BID_ACCEPTED"), (ride["id"], "DRIVER_ARRIVING"),
        (first["id"], "CANCELLED")]
    # And the admin who did not subscribe heard nothing
    assert bystander.events == []


async def test_going_online_and_offline_is_on_the_map(
    web: str, market: Market, customer: Person, listeners: list[Listener]
) -> None:
    # Given a region with a ride, a watching admin, and an offline driver last seen in the region
    await market.ride(customer)
    driver = await market.driver(online=False)
    await report(market, driver, IN_BERLIN)
    watcher = await listen(web, listeners, await market.admin())
    await watching(watcher)

    # When the driver goes online, then offline
    for url in ("/api/v1/drivers/me/online", "/api/v1/drivers/me/offline"):
        assert (await market.api.post(url, headers=driver.headers)).status_code == 204

    # Then the map hears both, at its last position
    came = await watcher.until("map:driver", driverId=driver.id, online=True)
    left = await watcher.until("map:driver", driverId=driver.id, online=False)
    assert (came["lat"], came["lng"]) == (left["lat"], left["lng"]) == IN_BERLIN


async def test_a_suspended_driver_leaves_the_map(
    web: str, market: Market, customer: Person, listeners: list[Listener]
) -> None:
    # Given a region with a ride, a watching admin, and an online driver reporting from it
    await market.ride(customer)
    driver = await market.driver()
    await report(market, driver, IN_BERLIN)
    admin = await market.admin()
    watcher = await listen(web, listeners, admin)
    await watching(watcher)

    # When an admin suspends the driver
    response = await market.api.post(f"/api/v1/admin/drivers/{driver.id}/suspend",
                                     headers=admin.headers, json={"reason": "documents expired"})
    assert response.status_code == 204

    # Then the map hears it go offline at its last position
    left = await watcher.until("map:driver", driverId=driver.id, online=False)
    assert (left["lat"], left["lng"]) == IN_BERLIN


async def test_a_driver_taken_offline_as_stale_leaves_the_map(
    web: str, market: Market, customer: Person, listeners: list[Listener], settings: Any
) -> None:
    # Given a region with a ride, a watching admin, and an online driver whose app last reported
    # from the region 20 minutes ago (then vanished)
    await market.ride(customer)
    driver = await market.driver()
    await report(market, driver, IN_BERLIN)
    with market.db.begin() as session:
        session.execute(update(Driver).where(Driver.user_id == uuid.UUID(driver.id))
                        .values(last_seen_at=datetime.now(UTC) - timedelta(minutes=20)))
    watcher = await listen(web, listeners, await market.admin())
    await watching(watcher)

    # When `drivers.prune_stale` runs as its job runs it (the worker's publisher, after commit)
    report_ = await asyncio.to_thread(prune_as_the_job_does, market, settings)

    # Then the driver is offline and the map hears it leave, at its last position
    assert uuid.UUID(driver.id) in report_.taken_offline
    left = await watcher.until("map:driver", driverId=driver.id, online=False)
    assert (left["lat"], left["lng"]) == IN_BERLIN


def prune_as_the_job_does(market: Market, settings: Settings) -> stale_drivers.PruneReport:
    later: list[Callable[[], Any]] = []
    client = create_sync_redis(settings.redis)
    publisher = Publisher(settings.redis)
    try:
        with market.db.begin() as session:
            report_ = stale_drivers.prune_stale(
                session, DriverIndexReader(client, RedisKeys(settings.redis)), settings.dispatch,
                now=datetime.now(UTC), after_commit=later.append, publisher=publisher)
        for action in later:
            action()
        return report_
    finally:
        client.close()


async def test_after_unsubscribing_the_admin_hears_nothing_more(
    web: str, market: Market, customer: Person, listeners: list[Listener]
) -> None:
    # Given an admin that watched the region, then unsubscribed
    await market.ride(customer)
    driver = await market.driver()
    watcher = await listen(web, listeners, await market.admin())
    await watching(watcher)
    assert await watcher.call("unsubscribe:map", {"region": REGION}) == {"ok": True}

    # When a driver moves and a ride is created in it
    await report(market, driver, IN_BERLIN)
    await market.ride(customer)
    await asyncio.sleep(0.5)

    # Then nothing reaches the socket
    assert watcher.events == []


async def test_nobody_watching_publishes_nothing_for_the_map(
    market: Market, customer: Person, settings: Any
) -> None:
    # Given nobody watches any map
    driver = await market.driver()
    async with BusTap(settings) as tap:
        # When a ride is created and a driver reports its position
        await market.ride(customer)
        await report(market, driver, IN_BERLIN)
        # Then no map event is published at all
        assert [e.event for e in await tap.emitted() if e.event.startswith("map:")] == []


@pytest.mark.parametrize("event", ["subscribe:map", "unsubscribe:map", "subscribe:ops", "unsubscribe:ops"])
async def test_only_admins_may_watch_the_map_or_the_farm(
    web: str, market: Market, customer: Person, listeners: list[Listener], event: str
) -> None:
    # Given a customer's and a driver's sockets
    for person in (customer, await market.driver()):
        socket = await listen(web, listeners, person)
        # When they ask to watch
        ack = await socket.call(event, {"region": REGION})
        # Then they are refused
        assert ack["ok"] is False and ack["error"]["code"] == "FORBIDDEN", ack


async def test_an_unknown_or_missing_region_is_refused(
    web: str, market: Market, listeners: list[Listener]
) -> None:
    admin = await listen(web, listeners, await market.admin())
    assert (await admin.call("subscribe:map", {"region": "NOPE"}))["error"]["code"] == "NOT_FOUND"
    assert (await admin.call("subscribe:map", {}))["error"]["code"] == "VALIDATION_ERROR"


# --- GET /admin/map --------------------------------------------------------------------------------
async def test_the_map_lists_the_regions_open_rides_and_online_drivers_inside_its_bounds(
    market: Market, customer: Person
) -> None:
    # Given an open ride, a cancelled one, a driver online in the region, one online in Munich and
    # one offline in the region
    open_ride = await market.ride(customer)
    cancelled = await market.ride(customer)
    assert (await market.cancel(customer, cancelled["id"])).status_code == 200
    near, far, resting = await market.driver(), await market.driver(), await market.driver(online=False)
    await report(market, near, IN_BERLIN)
    await report(market, far, MUNICH)
    await report(market, resting, IN_BERLIN)
    admin = await market.admin()

    # When an admin reads the region's map
    response = await market.api.get("/api/v1/admin/map", params={"region": REGION}, headers=admin.headers)

    # Then it has the open ride and the online driver in the region, inside bounds around its rides
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["region"] == REGION
    bounds = body["bounds"]
    assert bounds["minLat"] < 52.50 and bounds["maxLat"] > 52.52
    assert bounds["minLng"] < 13.405 and bounds["maxLng"] > 13.42
    assert [(r["rideId"], r["status"], r["customerId"], r["driverId"]) for r in body["rides"]] == [
        (open_ride["id"], "PENDING_BIDS", customer.id, None)]
    assert body["rides"][0]["pickup"] == {"lat": 52.52, "lng": 13.405, "address": None}
    assert [(d["driverId"], d["lat"], d["lng"], d["online"], d["vehicleType"]) for d in body["drivers"]] == [
        (near.id, *IN_BERLIN, True, "van")]


async def test_a_region_without_rides_has_no_bounds_and_an_unknown_one_is_not_found(market: Market) -> None:
    admin = await market.admin()
    response = await market.api.get("/api/v1/admin/map", params={"region": REGION}, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"region": REGION, "bounds": None, "rides": [], "drivers": []}
    missing = await market.api.get("/api/v1/admin/map", params={"region": "NOPE"}, headers=admin.headers)
    assert_error(missing, 404, "NOT_FOUND")


async def test_the_map_is_for_admins_only(market: Market, customer: Person) -> None:
    response = await market.api.get("/api/v1/admin/map", params={"region": REGION}, headers=customer.headers)
    assert_error(response, 403, "FORBIDDEN")
