"""Bodies of the driver routes and the `driver:location` socket event (camelCase; no unknown fields)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from app.api.schemas import Request

Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
Heading = Annotated[float, msgspec.Meta(ge=0, le=360, description="Degrees clockwise from north")]
SpeedKph = Annotated[float, msgspec.Meta(ge=0, le=400)]


class LocationIn(Request):
    lat: Latitude
    lng: Longitude
    heading: Heading | None = None
    speed_kph: SpeedKph | None = None


class SocketLocationIn(LocationIn):
    """`driver:location`: the position, and the ride it is for (the driver's current ride is used)."""

    ride_id: uuid.UUID | None = None
