"""A worker killed with SIGKILL in the middle of dispatching: every ride still reaches its driver,
and every bid check still runs — once — on the next worker.

A burst of rides is requested; as soon as the first offer arrives the worker's whole process
group is SIGKILLed, leaving rides in every state: dispatched (their `dispatch.check_bids` waiting
in the job ledger until due), fetched by the dead worker but not acked (in its Redis acks set),
queued in Redis, and still waiting in the ledger. A new worker then hands the waiting jobs over
and — once the dead worker's heartbeat is older than `WORKER_HEARTBEAT_TIMEOUT` (15 s) and its
next maintenance pass runs (`WORKER_MAINTENANCE_INTERVAL`, 5 s) — requeues what the dead one
held. The recovery settings are the defaults: this is the bound a farm gets out of the box.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
from sqlalchemy import create_engine, func, select

from app.settings import Settings
from models import Offer, RideEvent
from tests.e2e.conftest import FARM_ENV, ensure_region, running_farm
from tests.e2e.farm import Farm

pytestmark = pytest.mark.e2e

RIDES = 40
#: One dispatch round: each ride's bid check ends it NO_DRIVERS_AVAILABLE (the driver never bids).
#: The bid window outlasts the recovery, so an offer whose emit died with the worker is still open
#: when the requeued step re-sends it. The reconciler is kept out of the way; recovery settings
#: are the defaults.
CRASH_ENV = {
    "DISPATCH_RADII_KM": "5",
    "DISPATCH_BID_WINDOW": "60",
    "RECONCILE_INTERVAL": "3600",
}
#: The slower of the two ways back for a dead worker's jobs (defaults), + start-up and slack: a
#: batched dispatch row's lease lapses (LEDGER_LEASE 30 + LEDGER_LEASE_CHECK_INTERVAL 5); a Redis
#: message is requeued (WORKER_HEARTBEAT_TIMEOUT 15 + WORKER_MAINTENANCE_INTERVAL 5). The bid
#: window above outlasts it, so the dead worker's offers are still open when they are re-sent.
RECOVERY_BOUND_S = 30 + 5 + 15


@pytest.fixture(scope="module")
def farm(database: str, redis_prefix_cleanup: None, settings: Settings) -> Iterator[Farm]:
    ensure_region(settings, "CRASH")
    yield from running_farm(CRASH_ENV)


def ended_without_drivers(settings: Settings, ride_ids: list[str]) -> int:
    """History rows PENDING_BIDS → NO_DRIVERS_AVAILABLE of these rides (one per bid check that acted)."""
    engine = create_engine(settings.db.url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(
                select(func.count()).select_from(RideEvent).where(
                    RideEvent.ride_id.in_([uuid.UUID(r) for r in ride_ids]),
                    RideEvent.to_status == "NO_DRIVERS_AVAILABLE")) or 0)
    finally:
        engine.dispose()


def offers_for(settings: Settings, driver_id: str) -> int:
    engine = create_engine(settings.db.url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count()).select_from(Offer).where(Offer.driver_id == uuid.UUID(driver_id))
                )
                or 0
            )
    finally:
        engine.dispose()


async def test_a_sigkilled_worker_loses_no_dispatch(farm: Farm, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as http:
        # Given an online driver (socket connected) next to the pickup, and a customer
        async def register(role: str, **extra: Any) -> dict[str, Any]:
            response = await http.post(
                "/auth/register",
                json={
                    "email": f"crash-{role}-{uuid.uuid4().hex[:10]}@example.com",
                    "password": "correct horse 1",
                    "fullName": "Crash",
                    "phone": "+491701234567",
                    "role": role,
                    **extra,
                },
            )
            assert response.status_code == 201, response.text
            body: dict[str, Any] = response.json()
            return body

        customer, driver = await register("customer"), await register("driver", vehicleType="truck")
        driver_auth = {"authorization": f"Bearer {driver['accessToken']}"}
        customer_auth = {"authorization": f"Bearer {customer['accessToken']}"}
        await http.put("/drivers/me/location", json={"lat": 48.1371, "lng": 11.5754}, headers=driver_auth)
        assert (await http.post("/drivers/me/online", headers=driver_auth)).status_code == 204
        offered: set[str] = set()
        first_offer, every_ride = asyncio.Event(), asyncio.Event()
        rides: list[str] = []
        sock = socketio.AsyncClient(reconnection=False)

        @sock.on("ride:offer")
        async def on_offer(payload: dict[str, Any]) -> None:
            offered.add(payload["rideId"])
            first_offer.set()
            if len(rides) == RIDES and offered >= set(rides):  # (not before every ride is requested)
                every_ride.set()

        await sock.connect(
            farm.base_url,
            transports=["websocket"],
            auth={"token": driver["accessToken"]},
            socketio_path="socket.io",
            wait_timeout=10,
        )
        replacement: Farm | None = None
        try:
            # When a burst of rides is requested and the worker is SIGKILLed at the first offer
            body = {
                "pickup": {"lat": 48.1372, "lng": 11.5755},
                "dropoff": {"lat": 48.15, "lng": 11.58},
                "vehicleType": "truck",
                "region": "CRASH",
                "paymentMethod": "cash",
            }
            async def request_rides() -> None:
                for _ in range(RIDES):
                    response = await http.post("/rides", json=body, headers=customer_auth)
                    assert response.status_code == 201, response.text
                    rides.append(response.json()["id"])

            creating = asyncio.create_task(request_rides())
            async with asyncio.timeout(20):
                await first_offer.wait()
            worker = farm.process("worker")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.popen.wait(timeout=10)
            killed_at = time.monotonic()
            await creating  # the web keeps taking rides: they wait in the outbox
            assert offers_for(settings, driver["user"]["id"]) < RIDES, "the worker finished before the kill"

            # And a new worker is started
            replacement = Farm.start({**FARM_ENV, **CRASH_ENV}, names=("worker",))

            # Then every ride's offer reaches the driver's socket — including those the dead worker
            # had committed but not yet published, which come back only with its requeued steps
            if offered >= set(rides):
                every_ride.set()
            async with asyncio.timeout(RECOVERY_BOUND_S + 15):
                await every_ride.wait()
            recovered_s = time.monotonic() - killed_at
            # And each ride was offered to the driver once (a resent offer is the same offer)
            assert offers_for(settings, driver["user"]["id"]) == RIDES
            print(f"\nall {RIDES} rides offered {recovered_s:.1f} s after the SIGKILL")
            assert recovered_s <= RECOVERY_BOUND_S

            # And every bid check ran, once: each ride ended NO_DRIVERS_AVAILABLE exactly once
            # (a round the new worker started at the last moment is checked a bid window later)
            deadline = time.monotonic() + int(CRASH_ENV["DISPATCH_BID_WINDOW"]) + 30
            while ended_without_drivers(settings, rides) < RIDES and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            assert ended_without_drivers(settings, rides) == RIDES
        finally:
            await sock.disconnect()
            if replacement is not None:
                replacement.stop()
