"""Online drivers seeded straight into a bench database and the GEO index (no API calls).

`seed_online_drivers()` writes `users` + `drivers` rows (online, fresh position) with COPY and
indexes every driver with `DriverIndexReader.place_many`, spread uniformly over a square box —
100,000 over 40 x 40 km is PERFORMANCE-NOTES' density (~62 per km²). A process that dispatches
to them must run with a `DRIVER_STALE_AFTER` longer than the bench (`FRESH_ENV`), or the seeded
positions go stale mid-run.

`copy_people()` (the COPY part, customers too) and `index_drivers()` (the GEO part) are the two
halves, for a bench that seeds more than drivers (`bench_dispatch.py`).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from datetime import UTC, datetime

import psycopg
import redis

from app.adapters.driver_index import DriverIndexReader
from app.keys import RedisKeys
from app.settings import Settings

#: Settings for every farm process of a bench with seeded drivers: positions stay fresh for an hour
#: (DRIVER_PRUNE_AFTER must stay above DRIVER_STALE_AFTER).
FRESH_ENV = {"DRIVER_STALE_AFTER": "3600", "DRIVER_PRUNE_AFTER": "7200"}


def box_point(rng: random.Random, center: tuple[float, float], box_km: float) -> tuple[float, float]:
    """A point uniform over a `box_km` x `box_km` square centred on `center` (lat, lng)."""
    half_lat = box_km / 2 / 110.574
    half_lng = box_km / 2 / (111.320 * math.cos(math.radians(center[0])))
    return center[0] + rng.uniform(-half_lat, half_lat), center[1] + rng.uniform(-half_lng, half_lng)


def copy_people(dsn: str, drivers: list[tuple[uuid.UUID, float, float]], customers: list[uuid.UUID], *,
                vehicle_type: str) -> None:
    """`users` for everyone and `drivers` rows (online, fresh position) with COPY, then ANALYZE."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (id, email, password_hash, full_name, phone, role, whatsapp_opt_in, "
                      "is_active, token_generation, created_at, updated_at) FROM STDIN") as copy:
            for number, (user_id, _, _) in enumerate(drivers):
                copy.write_row((user_id, f"bench-driver-{number}@example.com", "!", f"Driver {number}",
                                "+491700000000", "driver", False, True, 0, now, now))
            for number, user_id in enumerate(customers):
                copy.write_row((user_id, f"bench-customer-{number}@example.com", "!", f"Customer {number}",
                                "+491700000000", "customer", False, True, 0, now, now))
        with cur.copy("COPY drivers (user_id, vehicle_type, availability, last_lat, last_lng, last_seen_at, "
                      "created_at) FROM STDIN") as copy:
            for user_id, lat, lng in drivers:
                copy.write_row((user_id, vehicle_type, "online", lat, lng, now, now))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE drivers")


def seed_online_drivers(dsn: str, settings: Settings, count: int, *, vehicle_type: str,
                        center: tuple[float, float], box_km: float = 40.0, seed: int = 20261122) -> None:
    """`count` online drivers of `vehicle_type` over the box: rows with COPY, then the GEO index."""
    rng = random.Random(seed)
    drivers = [(uuid.uuid4(), *box_point(rng, center, box_km)) for _ in range(count)]
    copy_people(dsn, drivers, [], vehicle_type=vehicle_type)
    index_drivers(settings, drivers, vehicle_type=vehicle_type)


def index_drivers(settings: Settings, drivers: list[tuple[uuid.UUID, float, float]], *,
                  vehicle_type: str) -> None:
    """Every driver at its position in the GEO index of `vehicle_type`, seen now."""
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        seen = time.time()
        DriverIndexReader(client, RedisKeys(settings.redis)).place_many(
            vehicle_type, ((d, lat, lng, seen) for d, lat, lng in drivers))
    finally:
        client.close()
