"""A ride from request to completion on the real farm, watched through real Socket.IO clients.

Customer requests a ride → the nearby driver's socket gets `ride:offer` (from a worker) → the
driver bids → the customer's socket gets `bid:new`, then `bids:ready` after the bid window → the
customer accepts → the driver's socket gets `ride:status` in its user room → the driver walks the
ride to COMPLETED while streaming its position, and the customer's socket sees every
`ride:status` and `driver:location_update`, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import socketio

from app.settings import Settings
from tests.e2e.conftest import ensure_region, running_farm
from tests.e2e.farm import Farm

pytestmark = pytest.mark.e2e

DEADLINE_S = 20.0
PICKUP = {"lat": 52.5219, "lng": 13.4132}
NEAR_PICKUP = {"lat": 52.5240, "lng": 13.4160}
WALK = ["DRIVER_ARRIVING", "PICKUP_ARRIVED", "LOADING", "IN_TRANSIT", "DROPOFF_ARRIVED", "COMPLETED"]


@pytest.fixture(scope="module")
def farm(database: str, redis_prefix_cleanup: None, settings: Settings) -> Iterator[Farm]:
    """The farm with a two-second bid window, and a region to ride in."""
    ensure_region(settings, "E2E")
    yield from running_farm({"DISPATCH_BID_WINDOW": "2"})


@pytest.fixture
async def http(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as client:
        yield client


class Watcher:
    """A socket that records every event of interest, in arrival order."""

    EVENTS = ("ride:offer", "bid:new", "bids:ready", "ride:status", "driver:location_update")

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()
        for name in self.EVENTS:
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        async def record(payload: dict[str, Any]) -> None:
            async with self._arrived:
                self.events.append((name, payload))
                self._arrived.notify_all()

        return record

    async def connect(self, base_url: str, token: str) -> None:
        await self.client.connect(
            base_url,
            transports=["websocket"],
            auth={"token": token},
            socketio_path="socket.io",
            wait_timeout=10,
        )

    async def wait_for(self, name: str, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event, payload in self.events:
                if event == name and all(payload.get(k) == v for k, v in match.items()):
                    return payload
            return None

        async with asyncio.timeout(DEADLINE_S), self._arrived:
            await self._arrived.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result

    def named(self, *names: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, p) for n, p in self.events if n in names]


async def register(http: httpx.AsyncClient, role: str, **extra: Any) -> dict[str, Any]:
    response = await http.post(
        "/auth/register",
        json={
            "email": f"flow-{role}-{uuid.uuid4().hex[:10]}@example.com",
            "password": "correct horse staple",
            "fullName": f"Flow {role}",
            "phone": "+491701234567",
            "role": role,
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def auth(account: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {account['accessToken']}"}


async def test_a_ride_from_request_to_completion_seen_live_by_both_sides(
    farm: Farm, http: httpx.AsyncClient
) -> None:
    # Given an online van driver next to the pickup and a customer, both with live sockets
    customer = await register(http, "customer")
    driver = await register(http, "driver", vehicleType="van")
    assert (await http.put("/drivers/me/location", json=NEAR_PICKUP, headers=auth(driver))).status_code == 204
    assert (await http.post("/drivers/me/online", headers=auth(driver))).status_code == 204
    customer_socket, driver_socket = Watcher(), Watcher()
    await customer_socket.connect(farm.base_url, customer["accessToken"])
    await driver_socket.connect(farm.base_url, driver["accessToken"])
    try:
        # When the customer requests a ride, the driver's socket is offered it by a worker
        created = await http.post(
            "/rides",
            headers=auth(customer),
            json={
                "pickup": PICKUP,
                "dropoff": {"lat": 52.50, "lng": 13.40},
                "vehicleType": "van",
                "region": "E2E",
                "paymentMethod": "cash",
            },
        )
        assert created.status_code == 201, created.text
        ride_id = created.json()["id"]
        offer = await driver_socket.wait_for("ride:offer", rideId=ride_id)
        assert offer["round"] == 0 and offer["distanceKm"] < 1
        ack = await customer_socket.client.call("subscribe:ride", {"rideId": ride_id}, timeout=10)
        assert ack == {"ok": True}
        stranger = await driver_socket.client.call(
            "subscribe:ride", {"rideId": str(uuid.uuid4())}, timeout=10
        )
        assert stranger["ok"] is False and stranger["error"]["code"] == "FORBIDDEN"

        # And the driver bids: the customer sees the bid, then bids:ready after the window
        bid = await http.post(
            f"/rides/{ride_id}/bids",
            headers=auth(driver),
            json={"price": {"amount": 2500, "currency": "EUR"}, "etaMinutes": 4},
        )
        assert bid.status_code == 201, bid.text
        await customer_socket.wait_for("bid:new", id=bid.json()["id"])
        ready = await customer_socket.wait_for("bids:ready", rideId=ride_id)
        assert ready["count"] == 1

        # When the customer accepts, the driver is told in its own room
        accepted = await http.post(f"/rides/{ride_id}/bids/{bid.json()['id']}/accept", headers=auth(customer))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "BID_ACCEPTED"
        await driver_socket.wait_for("ride:status", rideId=ride_id, status="BID_ACCEPTED")

        # And the driver walks the ride to COMPLETED, reporting its position at every step
        for number, status in enumerate(WALK):
            spot = {"lat": NEAR_PICKUP["lat"] - 0.002 * number, "lng": NEAR_PICKUP["lng"]}
            assert await driver_socket.client.call("driver:location", spot, timeout=10) == {"ok": True}
            await customer_socket.wait_for("driver:location_update", rideId=ride_id, lat=spot["lat"])
            moved = await http.post(f"/rides/{ride_id}/status", headers=auth(driver), json={"status": status})
            assert moved.status_code == 200, moved.text
            await customer_socket.wait_for("ride:status", rideId=ride_id, status=status)
    finally:
        await customer_socket.client.disconnect()
        await driver_socket.client.disconnect()

    # Then the customer saw every status change and position, in order, each once
    statuses = [p["status"] for n, p in customer_socket.named("ride:status") if p["rideId"] == ride_id]
    assert statuses == ["BID_ACCEPTED", *WALK]
    trail = [n for n, p in customer_socket.named("ride:status", "driver:location_update")]
    assert trail == ["ride:status"] + ["driver:location_update", "ride:status"] * len(WALK)
    # And the ride's history tells the same story
    final = (await http.get(f"/rides/{ride_id}", headers=auth(customer))).json()
    assert [h["to"] for h in final["history"]] == ["PENDING_BIDS", "BID_ACCEPTED", *WALK]
    assert final["acceptedBid"]["id"] == bid.json()["id"]
