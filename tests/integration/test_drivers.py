"""A driver's position and availability (`app/services/drivers.py`), over HTTP and the socket.

Routes: `PUT /drivers/me/location`, `POST /drivers/me/online|offline`; the socket event
`driver:location`. What a user notices: where the row says the driver is, whether dispatch can
find it in the GEO index, and what a ride's room hears. Real PostgreSQL and Redis; the socket
tests run the web process's real ASGI app (`app.asgi.build_asgi`) under uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import redis
import socketio
from sqlalchemy import select, update

from app.adapters.driver_index import DriverIndexReader
from app.api.context import WebContext
from app.db import AsyncUnitOfWork
from app.keys import RedisKeys, ride_room
from app.redis_conn import create_sync_redis
from app.services import drivers
from app.settings import Settings
from models import Driver, DriverAvailability
from tests.integration.conftest import Accounts, Client, bearer, error_code, own_session

LOCATION = "/api/v1/drivers/me/location"
ONLINE = "/api/v1/drivers/me/online"
OFFLINE = "/api/v1/drivers/me/offline"
VAN = "van"
BERLIN = (52.5200, 13.4050)
POTSDAM = (52.3906, 13.0645)
DEADLINE_S = 10.0


class IndexView:
    """What dispatch sees of the GEO index (and its raw keys, to show they move together)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, stale_after_s: int) -> None:
        self.client = client
        self.keys = keys
        self.reader = DriverIndexReader(client, keys)
        self.stale_after_s = stale_after_s

    def has(self, driver_id: str) -> bool:
        in_geo = self.client.zscore(self.keys.driver_geo(VAN), driver_id) is not None
        in_seen = self.client.zscore(self.keys.driver_seen(VAN), driver_id) is not None
        assert in_geo == in_seen, "position and last-seen time out of step"
        return in_geo

    def found_near(self, point: tuple[float, float]) -> list[str]:
        """The drivers dispatch would find within 1 km of `point`."""
        found = self.reader.nearby(VAN, point[0], point[1], 1.0, limit=50,
                                   seen_after=time.time() - self.stale_after_s)
        return [str(driver) for driver, _ in found]


@pytest.fixture
def index(clean: None, settings: Settings) -> Iterator[IndexView]:
    client = create_sync_redis(settings.redis)
    yield IndexView(client, RedisKeys(settings.redis), settings.dispatch.driver_stale_after_s)
    client.close()


async def driver_row(api: Client, driver_id: str) -> Driver:
    async with own_session() as session:
        row: Driver = await session.get_one(Driver, uuid.UUID(driver_id))
        return row


async def change_row(api: Client, driver_id: str, **values: Any) -> None:
    """Set columns of a driver's row directly (a Given the routes under test don't make)."""
    async with own_session() as session:
        await session.execute(update(Driver).where(Driver.user_id == uuid.UUID(driver_id)).values(**values))
        await session.commit()


async def report(api: Client, driver: dict[str, Any], point: tuple[float, float],
                 **extra: Any) -> httpx.Response:
    return await api.put(LOCATION, json={"lat": point[0], "lng": point[1], **extra},
                         headers=bearer(driver["accessToken"]))


async def post_as(api: Client, url: str, someone: dict[str, Any]) -> httpx.Response:
    return await api.post(url, headers=bearer(someone["accessToken"]))


# --- HTTP ------------------------------------------------------------------------------------------
async def test_a_position_is_stored_while_offline_but_the_driver_is_not_indexed(
    api: Client, accounts: Accounts, index: IndexView
) -> None:
    # Given a driver who has not gone online
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]

    # When it reports its position with heading and speed
    before = datetime.now(UTC)
    response = await report(api, driver, BERLIN, heading=90.5, speedKph=32)

    # Then the position is stored on its row
    assert response.status_code == 204, response.text
    row = await driver_row(api, driver_id)
    assert (row.last_lat, row.last_lng, row.last_heading, row.last_speed_kph) == (*BERLIN, 90.5, 32.0)
    assert row.last_seen_at is not None and row.last_seen_at >= before - timedelta(seconds=1)
    assert row.availability == DriverAvailability.OFFLINE
    # But dispatch cannot find it
    assert not index.has(driver_id)
    assert index.found_near(BERLIN) == []


async def test_going_online_indexes_the_driver_at_its_fresh_position_and_reports_move_it(
    api: Client, accounts: Accounts, index: IndexView
) -> None:
    # Given a driver that reported its position in Berlin while offline
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    assert (await report(api, driver, BERLIN)).status_code == 204

    # When it goes online
    response = await post_as(api, ONLINE, driver)

    # Then dispatch finds it in Berlin at once
    assert response.status_code == 204, response.text
    assert (await driver_row(api, driver_id)).availability == DriverAvailability.ONLINE
    assert index.found_near(BERLIN) == [driver_id]

    # When it drives to Potsdam and reports
    assert (await report(api, driver, POTSDAM)).status_code == 204

    # Then dispatch finds it in Potsdam and no longer in Berlin
    assert index.found_near(POTSDAM) == [driver_id]
    assert index.found_near(BERLIN) == []


async def test_going_online_without_a_fresh_position_indexes_the_driver_at_its_next_report(
    api: Client, accounts: Accounts, index: IndexView, settings: Settings
) -> None:
    # Given a driver that never reported, and one whose last report is older than the stale window
    never = await accounts.register("driver")
    quiet = await accounts.register("driver")
    assert (await report(api, quiet, BERLIN)).status_code == 204
    stale = datetime.now(UTC) - timedelta(seconds=settings.dispatch.driver_stale_after_s + 60)
    await change_row(api, quiet["user"]["id"], last_seen_at=stale)

    # When both go online
    for driver in (never, quiet):
        assert (await post_as(api, ONLINE, driver)).status_code == 204

    # Then neither is indexed yet
    assert not index.has(never["user"]["id"])
    assert not index.has(quiet["user"]["id"])

    # When each reports a position
    for driver in (never, quiet):
        assert (await report(api, driver, BERLIN)).status_code == 204

    # Then dispatch finds both
    assert sorted(index.found_near(BERLIN)) == sorted([never["user"]["id"], quiet["user"]["id"]])


async def test_going_offline_takes_the_driver_out_and_its_reports_keep_it_out(
    api: Client, accounts: Accounts, index: IndexView
) -> None:
    # Given an online driver dispatch can find
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    assert (await report(api, driver, BERLIN)).status_code == 204
    assert index.has(driver_id)

    # When it goes offline
    response = await post_as(api, OFFLINE, driver)

    # Then it is out of the index
    assert response.status_code == 204, response.text
    assert (await driver_row(api, driver_id)).availability == DriverAvailability.OFFLINE
    assert not index.has(driver_id)

    # When it keeps reporting positions
    assert (await report(api, driver, POTSDAM)).status_code == 204

    # Then they are stored but it stays out
    row = await driver_row(api, driver_id)
    assert (row.last_lat, row.last_lng) == POTSDAM
    assert not index.has(driver_id)


async def test_a_suspended_driver_leaves_the_index_and_stays_out_until_it_goes_online_again(
    api: Client, accounts: Accounts, index: IndexView
) -> None:
    # Given an online driver dispatch can find, and an admin
    admin = await accounts.admin()
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    assert (await report(api, driver, BERLIN)).status_code == 204
    assert index.has(driver_id)

    # When the admin suspends the driver
    response = await api.post(f"/api/v1/admin/drivers/{driver_id}/suspend", json={"reason": "fraud"},
                              headers=bearer(admin["accessToken"]))

    # Then it is offline and out of the index
    assert response.status_code == 204, response.text
    assert (await driver_row(api, driver_id)).availability == DriverAvailability.OFFLINE
    assert not index.has(driver_id)
    # And its reports and going online are refused, changing nothing
    for attempt in (await report(api, driver, POTSDAM), await post_as(api, ONLINE, driver)):
        assert attempt.status_code == 403
        assert error_code(attempt) == "ACCOUNT_DEACTIVATED"
    assert (await driver_row(api, driver_id)).last_lat == BERLIN[0]
    assert not index.has(driver_id)

    # When the admin activates it and it logs in again and reports
    response = await api.post(f"/api/v1/admin/drivers/{driver_id}/activate", json={"reason": "cleared"},
                              headers=bearer(admin["accessToken"]))
    assert response.status_code == 204, response.text
    driver = await accounts.session(driver["user"]["email"])
    assert (await report(api, driver, POTSDAM)).status_code == 204

    # Then it is still offline and out of the index
    assert (await driver_row(api, driver_id)).availability == DriverAvailability.OFFLINE
    assert not index.has(driver_id)

    # Until it goes online itself
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    assert index.found_near(POTSDAM) == [driver_id]


@pytest.fixture
async def other_web_process(clean: None, settings: Settings) -> AsyncIterator[WebContext]:
    """The clients of another web process (this test's event loop), to interleave its steps."""
    ctx = WebContext.build(settings)
    yield ctx
    await ctx.close()


async def test_a_location_update_landing_after_a_later_go_offline_does_not_bring_the_driver_back(
    api: Client, accounts: Accounts, index: IndexView, other_web_process: WebContext
) -> None:
    # Given an online driver
    driver = await accounts.register("driver")
    driver_id = uuid.UUID(driver["user"]["id"])
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    other = other_web_process

    # When a location update commits on another process, but its index write is slow there
    update_uow = AsyncUnitOfWork(other.sessions())
    try:
        await drivers.update_location(update_uow, other.driver_index, driver_id, *BERLIN,
                                      publisher=other.publisher)
        await update_uow.session.commit()
        # And meanwhile the driver goes offline, commit and index write done
        assert (await post_as(api, OFFLINE, driver)).status_code == 204
        # And only then the slow index write lands
        await update_uow.run_after_commit()
    finally:
        await update_uow.close()

    # Then the driver is out of the index, as its row says
    assert (await driver_row(api, str(driver_id))).availability == DriverAvailability.OFFLINE
    assert not index.has(str(driver_id))


def _listen_to_bus(index: IndexView) -> redis.client.PubSub:
    """A subscriber on the socket bus, subscribed before this returns."""
    pubsub = index.client.pubsub()
    pubsub.subscribe(index.keys.socketio_channel())
    confirmation = pubsub.get_message(timeout=5)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    return pubsub


def _emits(pubsub: redis.client.PubSub, *, quiet_s: float = 0.2) -> list[dict[str, Any]]:
    """The emits published on the socket bus until it stays quiet for `quiet_s`."""
    received = []
    while (item := pubsub.get_message(timeout=quiet_s)) is not None:
        if item["type"] != "message":
            continue
        message = msgspec.json.decode(item["data"])
        if message.get("method") == "emit":
            received.append(message)
    pubsub.close()
    return received


async def test_a_driver_on_a_ride_streams_its_position_to_the_ride_room_and_is_offered_no_other(
    api: Client, accounts: Accounts, index: IndexView, settings: Settings
) -> None:
    # Given an online driver dispatch can find, then assigned to a ride
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    assert (await report(api, driver, BERLIN)).status_code == 204
    ride_id = uuid.uuid4()
    await change_row(api, driver_id, active_ride_id=ride_id)
    # And someone listening on the socket bus
    bus = _listen_to_bus(index)

    # When it reports its position
    assert (await report(api, driver, POTSDAM, heading=10)).status_code == 204

    # Then the ride's room gets driver:location_update with the position
    [emit] = _emits(bus)
    assert emit["event"] == "driver:location_update"
    assert emit["room"] == ride_room(ride_id)
    payload = emit["data"][0] if isinstance(emit["data"], list) else emit["data"]
    assert {k: v for k, v in payload.items() if k != "at"} == {
        "rideId": str(ride_id), "driverId": driver_id, "lat": POTSDAM[0], "lng": POTSDAM[1],
    }
    at = datetime.fromisoformat(payload["at"])
    assert payload["at"].endswith("Z") and abs(datetime.now(UTC) - at) < timedelta(seconds=30)
    # And while busy it is not offered other rides
    assert not index.has(driver_id)


async def test_a_driver_without_a_ride_publishes_nothing(
    api: Client, accounts: Accounts, index: IndexView, settings: Settings
) -> None:
    # Given an online driver on no ride, and someone listening on the socket bus
    driver = await accounts.register("driver")
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    bus = _listen_to_bus(index)

    # When it reports its position
    assert (await report(api, driver, BERLIN)).status_code == 204

    # Then nothing is emitted
    assert _emits(bus) == []


@pytest.mark.parametrize(("method", "url"), [("PUT", LOCATION), ("POST", ONLINE), ("POST", OFFLINE)])
async def test_only_drivers_may_report_positions_or_change_availability(
    api: Client, accounts: Accounts, method: str, url: str
) -> None:
    # Given a customer
    customer = await accounts.register("customer")

    # When it uses a driver route
    response = await api.request(method, url, json={"lat": 1, "lng": 1} if method == "PUT" else None,
                                 headers=bearer(customer["accessToken"]))

    # Then it is 403 FORBIDDEN
    assert response.status_code == 403, response.text
    assert error_code(response) == "FORBIDDEN"


async def test_driver_routes_need_a_token(api: Client) -> None:
    response = await api.put(LOCATION, json={"lat": 1, "lng": 1})

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


@pytest.mark.parametrize(("body", "field"), [
    ({"lat": 90.01, "lng": 0}, "lat"),
    ({"lat": -91, "lng": 0}, "lat"),
    ({"lat": 0, "lng": 180.5}, "lng"),
    ({"lat": 0, "lng": -181}, "lng"),
    ({"lat": 0, "lng": 0, "heading": 361}, "heading"),
    ({"lat": 0, "lng": 0, "heading": -1}, "heading"),
    ({"lat": 0, "lng": 0, "speedKph": 401}, "speedKph"),
    ({"lat": 0, "lng": 0, "speedKph": -0.5}, "speedKph"),
    ({"lng": 0}, "lat"),
    ({"lat": "north", "lng": 0}, "lat"),
    ({"lat": 0, "lng": 0, "altitude": 30}, "altitude"),
], ids=["lat-high", "lat-low", "lng-high", "lng-low", "heading-high", "heading-low", "speed-high",
        "speed-negative", "lat-missing", "lat-text", "unknown-field"])
async def test_a_bad_position_is_refused_naming_the_field(
    api: Client, accounts: Accounts, index: IndexView, body: dict[str, Any], field: str
) -> None:
    # Given an online driver
    driver = await accounts.register("driver")
    assert (await post_as(api, ONLINE, driver)).status_code == 204

    # When it reports a position with a bad or unknown field
    response = await api.put(LOCATION, json=body, headers=bearer(driver["accessToken"]))

    # Then it is 400 VALIDATION_ERROR naming the field, and nothing is stored or indexed
    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    assert field in response.json()["error"]["details"]
    assert (await driver_row(api, driver["user"]["id"])).last_seen_at is None
    assert not index.has(driver["user"]["id"])


# --- Socket.IO -------------------------------------------------------------------------------------
@pytest.fixture
async def sockets() -> AsyncIterator[list[socketio.AsyncClient]]:
    made: list[socketio.AsyncClient] = []
    yield made
    for client in made:
        if client.connected:
            await client.disconnect()


async def connect(web: str, sockets: list[socketio.AsyncClient], token: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    sockets.append(client)
    await client.connect(web, transports=["websocket"], auth={"token": token}, socketio_path="socket.io",
                         wait_timeout=DEADLINE_S)
    return client


async def send_location(client: socketio.AsyncClient, payload: Any) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE_S):
        ack: dict[str, Any] = await client.call("driver:location", payload, timeout=DEADLINE_S)
    return ack


async def test_a_driver_socket_reports_positions_like_the_http_route(
    web: str, api: Client, accounts: Accounts, index: IndexView, sockets: list[socketio.AsyncClient]
) -> None:
    # Given a driver with a live socket, offline
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    live = await connect(web, sockets, driver["accessToken"])

    # When it sends its position on the socket
    ack = await send_location(live, {"lat": BERLIN[0], "lng": BERLIN[1], "heading": 180, "speedKph": 12.5})

    # Then it is acked, stored, and (offline) not indexed
    assert ack == {"ok": True}
    row = await driver_row(api, driver_id)
    assert (row.last_lat, row.last_lng, row.last_heading, row.last_speed_kph) == (*BERLIN, 180.0, 12.5)
    assert not index.has(driver_id)

    # When it goes online and sends its next position, naming its ride as clients may
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    ack = await send_location(live, {"lat": POTSDAM[0], "lng": POTSDAM[1], "rideId": str(uuid.uuid4())})

    # Then dispatch finds it there
    assert ack == {"ok": True}
    assert index.found_near(POTSDAM) == [driver_id]


async def test_a_customer_socket_may_not_report_a_position(
    web: str, accounts: Accounts, sockets: list[socketio.AsyncClient]
) -> None:
    customer = await accounts.register("customer")
    live = await connect(web, sockets, customer["accessToken"])

    ack = await send_location(live, {"lat": BERLIN[0], "lng": BERLIN[1]})

    assert ack["ok"] is False
    assert ack["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(("payload", "field"), [
    ({"lat": 95, "lng": 0}, "lat"),
    ({"lat": 0, "lng": 0, "speedKph": 500}, "speedKph"),
    ({"lat": 0, "lng": 0, "rideId": "not-a-uuid"}, "rideId"),
    ({"lat": 0, "lng": 0, "altitude": 3}, "altitude"),
    ({"lng": 0}, "lat"),
    ("52.5,13.4", "body"),
], ids=["lat", "speed", "ride-id", "unknown-field", "missing", "not-an-object"])
async def test_a_bad_socket_position_is_refused_naming_the_field(
    web: str, api: Client, accounts: Accounts, sockets: list[socketio.AsyncClient], payload: Any,
    field: str
) -> None:
    # Given a driver with a live socket
    driver = await accounts.register("driver")
    live = await connect(web, sockets, driver["accessToken"])

    # When it sends a bad position
    ack = await send_location(live, payload)

    # Then the ack is a VALIDATION_ERROR naming the field, and nothing is stored
    assert ack["ok"] is False
    assert ack["error"]["code"] == "VALIDATION_ERROR"
    assert field in ack["error"]["details"], ack
    assert (await driver_row(api, driver["user"]["id"])).last_seen_at is None


async def test_a_suspended_drivers_live_socket_cannot_put_it_back_in_the_index(
    web: str, api: Client, accounts: Accounts, index: IndexView, sockets: list[socketio.AsyncClient]
) -> None:
    # Given an online, indexed driver with a live socket (no worker runs here to disconnect it)
    admin = await accounts.admin()
    driver = await accounts.register("driver")
    driver_id = driver["user"]["id"]
    assert (await post_as(api, ONLINE, driver)).status_code == 204
    live = await connect(web, sockets, driver["accessToken"])
    assert (await send_location(live, {"lat": BERLIN[0], "lng": BERLIN[1]})) == {"ok": True}
    assert index.has(driver_id)

    # When the admin suspends it, and the socket keeps sending positions
    response = await api.post(f"/api/v1/admin/drivers/{driver_id}/suspend", json={"reason": "fraud"},
                              headers=bearer(admin["accessToken"]))
    assert response.status_code == 204, response.text
    ack = await send_location(live, {"lat": POTSDAM[0], "lng": POTSDAM[1]})

    # Then the position is refused and the driver stays out of the index
    assert ack["ok"] is False
    assert ack["error"]["code"] == "ACCOUNT_DEACTIVATED"
    assert not index.has(driver_id)
    assert (await driver_row(api, driver_id)).last_lat == BERLIN[0]
    # And the driver table says why
    async with own_session() as session:
        availability = await session.scalar(
            select(Driver.availability).where(Driver.user_id == uuid.UUID(driver_id)))
    assert availability == DriverAvailability.OFFLINE
