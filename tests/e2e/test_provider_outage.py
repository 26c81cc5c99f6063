"""Twilio unreachable while rides are dispatched: dispatch doesn't notice, and nothing is lost.

The farm's Twilio address is a closed port. A burst of rides is requested; each books a
confirmation message (and later a no-drivers one) that can't be sent. Every `ride:offer` still
reaches the driver's socket well before its `expiresAt`: a failing send costs one log line, the
circuit pauses sends after a handful of failures, and the waiting messages sit in the job ledger
instead of burning their retries. Then Twilio comes back at the same address and every message is
sent exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import socketio
from sqlalchemy import create_engine, func, select

from app.settings import Settings
from models import NotificationRequest, Ride
from tests.e2e.conftest import ensure_region, running_farm
from tests.e2e.farm import Farm, free_port
from tests.fakes.twilio_server import FakeTwilio

pytestmark = pytest.mark.e2e

RIDES = 50
BID_WINDOW_S = 8
TWILIO = FakeTwilio(port=free_port())
OUTAGE_ENV = {
    "DISPATCH_RADII_KM": "5",
    "DISPATCH_BID_WINDOW": str(BID_WINDOW_S),
    "TWILIO_ACCOUNT_SID": TWILIO.account_sid,
    "TWILIO_AUTH_TOKEN": TWILIO.auth_token,
    "TWILIO_SMS_FROM": "+15005550006",
    "TWILIO_API_BASE": f"http://127.0.0.1:{TWILIO.port}",  # nothing listens there yet
    "TWILIO_TIMEOUT": "2",
    "TWILIO_CIRCUIT_PAUSE": "1",
}


@pytest.fixture(scope="module")
def farm(database: str, redis_prefix_cleanup: None, settings: Settings) -> Iterator[Farm]:
    ensure_region(settings, "OUTAGE")
    try:
        yield from running_farm(OUTAGE_ENV)
    finally:
        TWILIO.stop()


def notification_states(settings: Settings, customer_id: str) -> dict[str, int]:
    engine = create_engine(settings.db.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(NotificationRequest.status, func.count())
                                .where(NotificationRequest.user_id == uuid.UUID(customer_id))
                                .group_by(NotificationRequest.status)).all()
            return {status: int(n) for status, n in rows}
    finally:
        engine.dispose()


def rides_ended(settings: Settings, ride_ids: list[str]) -> int:
    engine = create_engine(settings.db.url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Ride).where(
                Ride.id.in_([uuid.UUID(r) for r in ride_ids]), Ride.status == "NO_DRIVERS_AVAILABLE")) or 0)
    finally:
        engine.dispose()


async def register(http: httpx.AsyncClient, role: str, **extra: Any) -> dict[str, Any]:
    response = await http.post("/auth/register", json={
        "email": f"outage-{role}-{uuid.uuid4().hex[:10]}@example.com", "password": "correct horse 1",
        "fullName": "Outage", "phone": "+491701234567", "role": role, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def test_twilio_down_never_delays_an_offer_and_every_message_is_sent_once_it_is_back(
    farm: Farm, settings: Settings,
) -> None:
    async with httpx.AsyncClient(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as http:
        # Given an online driver with a live socket next to the pickup, a customer, and Twilio down
        customer, driver = await register(http, "customer"), await register(http, "driver", vehicleType="van")
        driver_auth = {"authorization": f"Bearer {driver['accessToken']}"}
        customer_auth = {"authorization": f"Bearer {customer['accessToken']}"}
        await http.put("/drivers/me/location", json={"lat": 52.52, "lng": 13.405}, headers=driver_auth)
        assert (await http.post("/drivers/me/online", headers=driver_auth)).status_code == 204
        offers: dict[str, tuple[float, dict[str, Any]]] = {}
        every_offer = asyncio.Event()
        rides: list[str] = []
        sock = socketio.AsyncClient(reconnection=False)

        @sock.on("ride:offer")
        async def on_offer(payload: dict[str, Any]) -> None:
            offers[payload["rideId"]] = (time.time(), payload)
            if len(rides) == RIDES and set(offers) >= set(rides):
                every_offer.set()

        await sock.connect(farm.base_url, transports=["websocket"], auth={"token": driver["accessToken"]},
                           socketio_path="socket.io", wait_timeout=10)
        try:
            # When 50 rides are requested (each books a confirmation that can't be sent)
            body = {"pickup": {"lat": 52.5201, "lng": 13.4051}, "dropoff": {"lat": 52.53, "lng": 13.41},
                    "vehicleType": "van", "region": "OUTAGE", "paymentMethod": "cash"}
            for _ in range(RIDES):
                response = await http.post("/rides", json=body, headers=customer_auth)
                assert response.status_code == 201, response.text
                rides.append(response.json()["id"])
            if set(offers) >= set(rides):
                every_offer.set()
            # Then every offer reaches the driver's socket, each before its own expiresAt
            async with asyncio.timeout(BID_WINDOW_S + 10):
                await every_offer.wait()
            late = [(ride, received - parse_time(payload["expiresAt"]))
                    for ride, (received, payload) in offers.items()
                    if received >= parse_time(payload["expiresAt"])]
            assert late == [], f"offers after their expiresAt: {late}"
            margin = min(parse_time(payload["expiresAt"]) - received for received, payload in offers.values())
            print(f"\nall {RIDES} offers arrived, the latest {margin:.2f} s before its expiry")
            # And meanwhile nothing was sent: the messages wait (none failed for good)
            states = notification_states(settings, customer["user"]["id"])
            assert states.get("sent", 0) == 0 and states.get("failed", 0) == 0, states

            # When Twilio comes back at the same address (and every ride's round has ended)
            TWILIO.start()
            deadline = time.monotonic() + 60
            while rides_ended(settings, rides) < RIDES and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            assert rides_ended(settings, rides) == RIDES

            # Then every message (a confirmation and a no-drivers notice per ride) is sent exactly once
            def all_sent() -> bool:
                return notification_states(settings, customer["user"]["id"]) == {"sent": 2 * RIDES}

            deadline = time.monotonic() + 60
            while not all_sent() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            assert notification_states(settings, customer["user"]["id"]) == {"sent": 2 * RIDES}
            bodies = [message["body"] for message in TWILIO.messages]
            assert len(bodies) == 2 * RIDES and len(set(bodies)) == 2 * RIDES
        finally:
            await sock.disconnect()
