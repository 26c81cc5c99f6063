"""The ride the HTTP benchmarks book: a van from Alexanderplatz to Checkpoint Charlie, region BNCH.

`bench_rides.py` and `bench_offer_latency.py` post `ride_body()` to `POST /api/v1/rides`; the
region must exist first (`BenchStack.add_region(REGION)`).
"""

from __future__ import annotations

import json

REGION = "BNCH"
VEHICLE = "van"
PICKUP = (52.5219, 13.4132)
DROPOFF = (52.5076, 13.3904)


def ride_body() -> bytes:
    """The request body, compact JSON."""
    return json.dumps({
        "pickup": {"lat": PICKUP[0], "lng": PICKUP[1], "address": "Alexanderplatz 1, Berlin"},
        "dropoff": {"lat": DROPOFF[0], "lng": DROPOFF[1], "address": "Checkpoint Charlie, Berlin"},
        "vehicleType": VEHICLE, "region": REGION, "paymentMethod": "cash",
    }, separators=(",", ":")).encode()
