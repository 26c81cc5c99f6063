"""Bodies of the ride, bid and region routes (camelCase; unknown fields refused)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.api.schemas import Request, Response, VehicleTypeName
from app.services.bids import BidRequest
from app.services.ride_creation import Place, RideRequest
from app.services.rides import RideView
from app.timestamps import rfc3339
from models import Bid, Region, RideEvent, RideStatus

Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
RegionCode = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+\Z")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}\Z")]
#: An RFC 3339 instant with its offset (`2026-12-24T14:30:00Z`, `…T15:30:00+01:00`).
Instant = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 with an offset")]



class PlaceIn(Request):
    lat: Latitude
    lng: Longitude
    address: Address | None = None


class RideIn(Request):
    pickup: PlaceIn
    dropoff: PlaceIn
    vehicle_type: VehicleTypeName
    region: RegionCode
    payment_method: Literal["card", "cash"]
    notes: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    #: A ride booked for later: dispatched `DISPATCH_SCHEDULE_LEAD` before it (`ride_creation`).
    scheduled_for: Annotated[Instant, msgspec.Meta(
        description="when the pickup is wanted (a ride booked ahead); absent or null: as soon as possible",
        examples=["2026-12-24T14:30:00Z"])] | None = None

    def to_request(self) -> RideRequest:
        return RideRequest(
            pickup=Place(self.pickup.lat, self.pickup.lng, self.pickup.address),
            dropoff=Place(self.dropoff.lat, self.dropoff.lng, self.dropoff.address),
            vehicle_type=self.vehicle_type, region=self.region, payment_method=self.payment_method,
            notes=self.notes, scheduled_for=self.scheduled_for,
        )


class CancelIn(Request):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class StatusIn(Request):
    status: RideStatus


class MoneyIn(Request):
    """Minor units as `app.currencies` defines them; which amounts a currency takes is checked with
    the ride (`bids.check_price`): twelve digits at most here (Stripe's limit for IDR)."""

    amount: Annotated[int, msgspec.Meta(gt=0, le=999_999_999_999)]
    currency: Currency


class BidIn(Request):
    price: MoneyIn
    eta_minutes: Annotated[int, msgspec.Meta(ge=0, le=24 * 60)]

    def to_request(self) -> BidRequest:
        return BidRequest(amount=self.price.amount, currency=self.price.currency,
                          eta_minutes=self.eta_minutes)


class PlaceOut(Response):
    lat: float
    lng: float
    address: str | None


class Money(Response):
    amount: int
    currency: str


class BidOut(Response):
    id: uuid.UUID
    ride_id: uuid.UUID
    driver_id: uuid.UUID
    price: Money
    eta_minutes: int
    status: str
    at: str

    @classmethod
    def of(cls, bid: Bid) -> BidOut:
        return cls(id=bid.id, ride_id=bid.ride_id, driver_id=bid.driver_id,
                   price=Money(amount=bid.amount, currency=bid.currency), eta_minutes=bid.eta_minutes,
                   status=bid.status.value, at=rfc3339(bid.created_at))


class ActorOut(Response):
    id: uuid.UUID | None
    role: str


class HistoryOut(Response):
    from_: str | None = msgspec.field(name="from")
    to: str
    by: ActorOut
    at: str
    reason: str | None

    @classmethod
    def of(cls, event: RideEvent) -> HistoryOut:
        return cls(from_=event.from_status, to=event.to_status,
                   by=ActorOut(id=event.actor_id, role=event.actor_role), at=rfc3339(event.at),
                   reason=event.reason)


class RideOut(Response):
    id: uuid.UUID
    customer_id: uuid.UUID
    driver_id: uuid.UUID | None
    status: str
    region: str
    vehicle_type: str
    payment_method: str
    pickup: PlaceOut
    dropoff: PlaceOut
    notes: str | None
    #: When the pickup is wanted, for a ride booked ahead; null: as soon as possible.
    scheduled_for: str | None
    distance_km: float
    #: The dispatch round the ride is in: 0 from its creation (the column is NULL until round 0
    #: is claimed, which dispatch's compare-and-set relies on), never null here.
    dispatch_round: int
    accepted_bid: BidOut | None
    history: list[HistoryOut]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, view: RideView) -> RideOut:
        ride = view.ride
        return cls(
            id=ride.id, customer_id=ride.customer_id, driver_id=ride.driver_id, status=ride.status.value,
            region=ride.region_code, vehicle_type=ride.vehicle_type.value,
            payment_method=ride.payment_method.value,
            pickup=PlaceOut(lat=ride.pickup_lat, lng=ride.pickup_lng, address=ride.pickup_address),
            dropoff=PlaceOut(lat=ride.dropoff_lat, lng=ride.dropoff_lng, address=ride.dropoff_address),
            notes=ride.notes, scheduled_for=rfc3339(ride.scheduled_for) if ride.scheduled_for else None,
            distance_km=ride.distance_km, dispatch_round=ride.dispatch_round or 0,
            accepted_bid=BidOut.of(view.accepted_bid) if view.accepted_bid else None,
            history=[HistoryOut.of(e) for e in view.history],
            created_at=rfc3339(ride.created_at), updated_at=rfc3339(ride.updated_at),
        )


class RideList(Response):
    items: list[RideOut]
    next_cursor: str | None


class BidList(Response):
    items: list[BidOut]
    next_cursor: str | None


class RegionOut(Response):
    code: str
    name: str
    currency: str
    commission_rate: float

    @classmethod
    def of(cls, region: Region) -> RegionOut:
        return cls(code=region.code, name=region.name, currency=region.currency,
                   commission_rate=float(region.commission_rate))


class RegionList(Response):
    items: list[RegionOut]
    next_cursor: str | None = None
