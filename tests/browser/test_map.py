"""The live map in the console: a region's open ride and the online driver near it are drawn; the
driver's location reports move its marker in place (over Socket.IO, no reload); a ride opens its
timeline; a driver going offline leaves the map."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import redis
from playwright.sync_api import Page, expect

from app.keys import RedisKeys, map_room
from app.redis_conn import create_sync_redis
from app.settings import Settings
from tests.browser.conftest import REGION, Accounts, Screenshots, register
from tests.browser.console_support import Console, hash_route, wait_until

pytestmark = pytest.mark.browser

PICKUP = {"lat": 52.5219, "lng": 13.4132}
DROPOFF = {"lat": 52.5000, "lng": 13.4000}
NEAR_PICKUP = {"lat": 52.5240, "lng": 13.4160}
#: Where the driver drives to: still inside the region's bounds (its rides' box, padded).
FURTHER = {"lat": 52.5301, "lng": 13.4201}


def number(value: float) -> re.Pattern[str]:
    """An attribute holding `value` (as JavaScript writes it, maybe with trailing zeros)."""
    return re.compile(rf"^{re.escape(str(value))}0*$")


@pytest.fixture
def watched(settings: Settings) -> Iterator[redis.Redis]:
    client = create_sync_redis(settings.redis)
    yield client
    client.close()


def test_the_live_map_shows_a_ride_and_a_driver_moving_then_leaving(
    page: Page, accounts: Accounts, http: httpx.Client, watched: redis.Redis, settings: Settings,
    screenshots: Screenshots,
) -> None:
    # Given an open ride in the region and an online driver next to its pickup
    customer, driver = register(http, "customer"), register(http, "driver", vehicleType="van")
    created = http.post("/rides", headers=customer.headers, json={
        "pickup": PICKUP, "dropoff": DROPOFF, "vehicleType": "van", "region": REGION,
        "paymentMethod": "cash"})
    assert created.status_code == 201, created.text
    ride_id = created.json()["id"]
    assert http.put("/drivers/me/location", json=NEAR_PICKUP, headers=driver.headers).status_code == 204
    assert http.post("/drivers/me/online", headers=driver.headers).status_code == 204
    try:
        # When the admin picks the region on the map page, both are drawn where they are
        console = Console(page)
        console.login(accounts.admin, "/map")
        console("map-region").fill(REGION)
        console("map-open").click()
        expect(page).to_have_url(hash_route(f"/map/{REGION}"))
        ride = console.row("map-ride", ride_id=ride_id)
        marker = console.row("map-driver", driver_id=driver.id)
        expect(ride).to_be_visible()
        expect(marker).to_have_attribute("data-lat", number(NEAR_PICKUP["lat"]))
        expect(marker).to_have_attribute("data-lng", number(NEAR_PICKUP["lng"]))
        expect(console("map-counts")).to_contain_text("1 ride")

        # When the driver reports a new position (once the page's socket watches the region)
        wait_until(lambda: watched.hexists(RedisKeys(settings.redis).watched_rooms(), map_room(REGION)),
                   what=f"the console's socket watches {map_room(REGION)}")
        same_node = marker.element_handle()
        page.evaluate("() => { window.__notReloaded = true; }")
        assert http.put("/drivers/me/location", json=FURTHER, headers=driver.headers).status_code == 204

        # Then the same marker moves, without a reload
        expect(marker).to_have_attribute("data-lat", number(FURTHER["lat"]))
        expect(marker).to_have_attribute("data-lng", number(FURTHER["lng"]))
        assert same_node.get_attribute("data-lat") == marker.get_attribute("data-lat")
        assert page.evaluate("() => window.__notReloaded === true")

        # When the admin clicks the ride, its timeline opens with what happened to it
        ride.click()
        expect(console("ride-timeline")).to_be_visible()
        expect(console("ride-timeline").get_by_test_id("timeline-entry").first).to_be_visible()
        screenshots.take(page, "map")

        # When the driver goes offline, its marker leaves the map
        assert http.post("/drivers/me/offline", headers=driver.headers).status_code == 204
        expect(marker).to_have_count(0)
        expect(ride).to_be_visible()
    finally:
        http.post("/drivers/me/offline", headers=driver.headers)
        http.post(f"/rides/{ride_id}/cancel", headers=customer.headers, json={"reason": "browser test over"})
