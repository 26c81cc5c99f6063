"""Rides as customers, drivers and admins see them: create, read, list, and move their status.

Creating a ride writes the ride, its first history row, the booking confirmation and the
`dispatch.step` job (outbox) in one autocommit statement and answers at once; the dispatch happens
in the workers. With a cap on open rides (`OPEN_RIDES_PER_CUSTOMER`), that statement runs after a
per-customer advisory lock in one pipelined transaction, and writes nothing past the cap (409
`CONFLICT`, reason `OPEN_RIDE_LIMIT`).
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import msgspec
import psycopg
from sqlalchemy import CursorResult, Result, and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.adapters.realtime import AsyncPublisher
from app.db import AsyncUnitOfWork
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.keys import QUEUE_DISPATCH
from app.logging import get_logger
from app.outbox import INSERT_JOB
from app.services import payments
from app.services.access import Principal
from app.services.notifications import notification_ctes, notification_params, place, ride_key
from app.services.phone_verification import require_verified_phone
from app.services.ride_events import history_row, status_event, status_rooms
from app.settings import Settings
from app.statements import StatementPool, psycopg_named
from models import Bid, Offer, PaymentMethod, Ride, RideEvent, RideStatus, VehicleType
from models.ride_states import ADMIN, CUSTOMER, DRIVER, check_move

log = get_logger("rides")

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Place:
    lat: float
    lng: float
    address: str | None = None


@dataclass(frozen=True)
class RideRequest:
    pickup: Place
    dropoff: Place
    vehicle_type: str
    region: str
    payment_method: str
    notes: str | None = None


@dataclass(frozen=True)
class RideView:
    ride: Ride
    accepted_bid: Bid | None
    history: list[RideEvent]


# --- create ----------------------------------------------------------------------------------------
#: The ride, its first history entry, its first dispatch job and the customer's booking confirmation
#: (notification + its send job), in one statement: the hot path of `POST /rides` is one round trip
#: (the rows' foreign keys are checked at the statement's end).
# One statement, idempotent for its ride id: run again (a retry after a dropped connection), it
# writes nothing — every other row hangs off the ride's insert or has its own unique key.
_RIDE_COLUMNS: Final = """id, customer_id, region_code, vehicle_type, payment_method, pickup_lat,
                       pickup_lng, pickup_address, dropoff_lat, dropoff_lng, dropoff_address, notes,
                       distance_km, status, created_at, updated_at"""
_RIDE_VALUES: Final = """:id, :customer_id, :region_code, :vehicle_type, :payment_method, :pickup_lat,
            :pickup_lng, :pickup_address, :dropoff_lat, :dropoff_lng, :dropoff_address, :notes,
            :distance_km, :status, :created_at, :updated_at"""
#: A ride in one of these no longer counts against its customer's open-ride cap.
_FINAL_SQL: Final = ", ".join(f"'{s.value}'" for s in (RideStatus.COMPLETED, RideStatus.CANCELLED,
                                                       RideStatus.NO_DRIVERS_AVAILABLE))


def _create_ride_sql(*, capped: bool) -> str:
    """The statement; `capped`: the ride is written only while its customer has fewer than
    `:open_ride_cap` open rides (run after `_OPEN_RIDES_LOCK`, in the same transaction)."""
    if capped:
        rows = (f"SELECT {_RIDE_VALUES}\n    WHERE (SELECT count(*) FROM rides"
                f" WHERE customer_id = :customer_id AND status NOT IN ({_FINAL_SQL})) < :open_ride_cap")
    else:
        rows = f"VALUES ({_RIDE_VALUES})"
    return """
WITH ride AS (
    INSERT INTO rides (""" + _RIDE_COLUMNS + """)
    """ + rows + """
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), history AS (
    INSERT INTO ride_history (ride_id, from_status, to_status, actor_id, actor_role, at)
    SELECT id, NULL, :status, :customer_id, :role, :created_at FROM ride
),""" + notification_ctes("note") + """
""" + INSERT_JOB + """
SELECT :message_id, :queue, :actor, CAST(:args AS jsonb), '{}'::jsonb, '{}'::jsonb, :created_at, :created_at
FROM ride
RETURNING 1
"""


_CREATE_RIDE: Final = psycopg_named(_create_ride_sql(capped=False))
_CREATE_CAPPED_RIDE: Final = psycopg_named(_create_ride_sql(capped=True))
#: One customer's ride creations, one at a time (to the end of the transaction), so each counts
#: the open rides the one before it committed: exactly the cap succeed, however many race.
_OPEN_RIDES_LOCK: Final = psycopg_named("SELECT pg_advisory_xact_lock(hashtextextended(:lock_key, 0))")


async def create_ride(statements: StatementPool, principal: Principal, request: RideRequest, *,
                      settings: Settings) -> RideView:
    """Store the ride as PENDING_BIDS with its history row, its booking confirmation and its
    `dispatch.step` job — one autocommit statement, one round trip; the outbox relay does the rest."""
    principal.require_role(CUSTOMER)
    require_verified_phone(principal, settings)
    now = datetime.now(UTC)
    ride_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": ride_id,
        "customer_id": principal.id,
        "region_code": request.region,
        "vehicle_type": request.vehicle_type,
        "payment_method": request.payment_method,
        "pickup_lat": request.pickup.lat,
        "pickup_lng": request.pickup.lng,
        "pickup_address": request.pickup.address,
        "dropoff_lat": request.dropoff.lat,
        "dropoff_lng": request.dropoff.lng,
        "dropoff_address": request.dropoff.address,
        "notes": request.notes,
        "distance_km": round(haversine_km(request.pickup.lat, request.pickup.lng,
                                          request.dropoff.lat, request.dropoff.lng), 3),
        "status": RideStatus.PENDING_BIDS,
        "created_at": now,
        "updated_at": now,
    }
    job = {"message_id": uuid.uuid4(), "queue": QUEUE_DISPATCH, "actor": "dispatch.step",
           "args": msgspec.json.encode([str(ride_id), 0]).decode(), "role": CUSTOMER}
    note = notification_params(
        "note", user_id=principal.id, template="booking_confirmed", settings=settings.twilio, now=now,
        dedupe_key=ride_key(ride_id, "booking_confirmed"),
        params={"rideId": str(ride_id), "vehicleType": request.vehicle_type,
                "pickup": place(request.pickup.address, request.pickup.lat, request.pickup.lng)})
    params = {**values, "status": RideStatus.PENDING_BIDS.value, **job, **note}
    cap = settings.limits.open_rides_per_customer
    try:
        if cap:
            created = await statements.fetch_one_in_transaction([
                (_OPEN_RIDES_LOCK, {"lock_key": f"open-rides:{principal.id}"}),
                (_CREATE_CAPPED_RIDE, {**params, "open_ride_cap": cap}),
            ])
            if created is None:
                log.info("ride.open_ride_limit", customer_id=str(principal.id), limit=cap)
                raise Conflict(f"You already have {cap} open rides; finish or cancel one first.",
                               details={"reason": "OPEN_RIDE_LIMIT", "limit": cap})
        else:
            await statements.fetch_one(_CREATE_RIDE, params)
    except psycopg.errors.ForeignKeyViolation as exc:
        if "region" in str(exc):
            raise ValidationFailed("Unknown region.", details={"region": "unknown region code"}) from exc
        raise
    ride = Ride(**{**values, "vehicle_type": VehicleType(request.vehicle_type),
                   "payment_method": PaymentMethod(request.payment_method)})
    log.info("ride.created", ride_id=str(ride_id), region=request.region, vehicle_type=request.vehicle_type)
    event = RideEvent(ride_id=ride_id, from_status=None, to_status=RideStatus.PENDING_BIDS.value,
                      actor_id=principal.id, actor_role=CUSTOMER, reason=None, at=now)
    return RideView(ride=ride, accepted_bid=None, history=[event])


# --- read ------------------------------------------------------------------------------------------
def _visible_to(principal: Principal) -> Any:
    """The SQL condition for the rides this caller may see."""
    if principal.role == ADMIN:
        return True
    if principal.role == CUSTOMER:
        return Ride.customer_id == principal.id
    offered = exists().where(and_(Offer.ride_id == Ride.id, Offer.driver_id == principal.id))
    return or_(Ride.driver_id == principal.id, offered)


async def load_ride(session: AsyncSession, principal: Principal, ride_id: uuid.UUID, *,
                    for_update: bool = False) -> Ride:
    """The ride if the caller may see it; `NotFound` otherwise (ids leak nothing)."""
    query = select(Ride).where(Ride.id == ride_id, _visible_to(principal))
    if for_update:
        query = query.with_for_update(of=Ride)
    ride = await session.scalar(query)
    if ride is None:
        raise NotFound("No ride has this id.")
    return ride


async def view_of(session: AsyncSession, ride: Ride) -> RideView:
    history = list((await session.scalars(
        select(RideEvent).where(RideEvent.ride_id == ride.id).order_by(RideEvent.id))).all())
    bid = await session.get(Bid, ride.accepted_bid_id) if ride.accepted_bid_id else None
    return RideView(ride=ride, accepted_bid=bid, history=history)


async def get_ride(session: AsyncSession, principal: Principal, ride_id: uuid.UUID) -> RideView:
    return await view_of(session, await load_ride(session, principal, ride_id))


class _Cursor(msgspec.Struct, array_like=True):
    created_at: datetime
    id: uuid.UUID


def encode_cursor(ride: Ride) -> str:
    raw = msgspec.json.encode(_Cursor(ride.created_at, ride.id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Cursor:
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), type=_Cursor)
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValidationFailed("The cursor is not valid.", details={"cursor": "malformed"}) from exc


async def list_rides(session: AsyncSession, principal: Principal, *, cursor: str | None,
                     limit: int) -> tuple[list[RideView], str | None]:
    """The caller's rides, newest first, `limit` per page; the next page's cursor or None."""
    query = select(Ride).where(_visible_to(principal))
    if cursor:
        after = decode_cursor(cursor)
        query = query.where(or_(Ride.created_at < after.created_at,
                                and_(Ride.created_at == after.created_at, Ride.id < after.id)))
    rides = list((await session.scalars(
        query.order_by(Ride.created_at.desc(), Ride.id.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rides[limit - 1]) if len(rides) > limit else None
    rides = rides[:limit]
    if not rides:
        return [], None
    events = (await session.scalars(select(RideEvent).where(RideEvent.ride_id.in_([r.id for r in rides]))
                                    .order_by(RideEvent.id))).all()
    by_ride: dict[uuid.UUID, list[RideEvent]] = {r.id: [] for r in rides}
    for event in events:
        by_ride[event.ride_id].append(event)
    bid_ids = [r.accepted_bid_id for r in rides if r.accepted_bid_id]
    bids = {b.id: b for b in (await session.scalars(select(Bid).where(Bid.id.in_(bid_ids)))).all()} \
        if bid_ids else {}
    return [RideView(ride=r, accepted_bid=bids.get(r.accepted_bid_id) if r.accepted_bid_id else None,
                     history=by_ride[r.id]) for r in rides], next_cursor


# --- status ------------------------------------------------------------------------------------------
async def move_ride(uow: AsyncUnitOfWork, publisher: AsyncPublisher, ride: Ride, target: RideStatus, *,
                    actor: Principal, reason: str | None = None,
                    changes: Mapping[str, Any] | None = None) -> Ride:
    """Apply one state-machine move to a ride locked by the caller (`load_ride(for_update=True)`).

    The UPDATE is conditional on the status the caller saw (`Conflict` if the ride moved
    meanwhile); `changes` are other columns set in the same statement (e.g. the assigned driver).
    Records the history row and emits `ride:status` to the ride's and both users' rooms after
    the commit. The caller frees the driver or starts follow-up jobs as the move requires.
    """
    before = ride.status
    check_move(before, target, actor.role)
    now = datetime.now(UTC)
    values: dict[str, Any] = {**(changes or {}), "status": target, "updated_at": now}
    result = await uow.session.execute(
        update(Ride).where(Ride.id == ride.id, Ride.status == before).values(**values)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise Conflict("The ride changed meanwhile; reload it.", details={"status": before.value})
    for name, value in values.items():
        set_committed_value(ride, name, value)
    await uow.session.execute(history_row(ride.id, before.value, target.value, actor_id=actor.id,
                                          role=actor.role, reason=reason, at=now))
    payload = status_event(ride.id, before.value, target.value, actor_id=actor.id, role=actor.role, at=now)
    rooms = status_rooms(ride.id, ride.customer_id, ride.driver_id)
    uow.after_commit(lambda: publisher.emit("ride:status", payload, rooms))
    if target in (RideStatus.COMPLETED, RideStatus.CANCELLED):
        await payments.after_ride_move(uow.session, ride, before, target)
    log.info("ride.status_changed", ride_id=str(ride.id), before=before.value, after=target.value,
             by=actor.role)
    return ride


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched."""
    return cast(CursorResult[Any], result).rowcount or 0


def require_driver_of(principal: Principal, ride: Ride) -> None:
    if principal.role != DRIVER or ride.driver_id != principal.id:
        raise Forbidden("Only the ride's assigned driver may do this.")


async def may_follow(session: AsyncSession, user_id: uuid.UUID, role: str, ride_id: uuid.UUID) -> bool:
    """Whether this user may join `ride:{id}`: the ride's customer, its assigned driver, an admin."""
    query = select(Ride.customer_id, Ride.driver_id).where(Ride.id == ride_id)
    row = (await session.execute(query)).first()
    if row is None:
        return False
    return role == ADMIN or user_id in (row.customer_id, row.driver_id)
