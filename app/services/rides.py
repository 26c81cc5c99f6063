"""Rides as customers, drivers and admins see them: create, read, list, and move their status.

Creating a ride (`app.services.ride_creation`) writes the ride, its first history row, the booking
confirmation and the `dispatch.step` job in one statement, shared with the other rides the web
process receives meanwhile, and answers at once; the dispatch happens in the workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result, and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.adapters.realtime import AsyncPublisher
from app.cursors import Position, decode_cursor, encode_cursor
from app.db import AsyncUnitOfWork
from app.errors import Conflict, Forbidden, NotFound
from app.logging import get_logger
from app.services import live_map, ride_creation, ride_moves
from app.services.access import Principal
from app.services.ride_creation import RideRequest, RideWriter
from app.services.ride_moves import Mover, RideMoved, RideState
from app.settings import Settings
from models import Bid, Offer, Ride, RideEvent, RideStatus
from models.ride_states import ADMIN, CUSTOMER, DRIVER

log = get_logger("rides")


@dataclass(frozen=True)
class RideView:
    ride: Ride
    accepted_bid: Bid | None
    history: list[RideEvent]


# --- create ----------------------------------------------------------------------------------------
async def create_ride(writer: RideWriter, principal: Principal, request: RideRequest, *,
                      settings: Settings, publisher: AsyncPublisher | None = None) -> RideView:
    """Store the ride as PENDING_BIDS with its history row, booking confirmation and first round's
    job, in a statement shared with the rides arriving meanwhile (`app.services.ride_creation`);
    then (written for good) `map:ride` to its region's map, if someone watches it."""
    ride, event = await ride_creation.create_ride(writer, principal, request, settings=settings)
    if publisher is not None:
        await publisher.emit(*live_map.ride_emit(ride))
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


async def list_rides(session: AsyncSession, principal: Principal, *, cursor: str | None,
                     limit: int) -> tuple[list[RideView], str | None]:
    """The caller's rides, newest first, `limit` per page; the next page's cursor or None."""
    query = select(Ride).where(_visible_to(principal))
    if cursor:
        after = decode_cursor(cursor, Position)
        query = query.where(or_(Ride.created_at < after.at,
                                and_(Ride.created_at == after.at, Ride.id < after.id)))
    rides = list((await session.scalars(
        query.order_by(Ride.created_at.desc(), Ride.id.desc()).limit(limit + 1))).all())
    last = rides[limit - 1] if len(rides) > limit else None
    next_cursor = encode_cursor(Position(last.created_at, last.id)) if last else None
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
                    changes: Mapping[str, Any] | None = None) -> RideMoved:
    """Apply one state-machine move to a ride locked by the caller (`load_ride(for_update=True)`).

    The move is decided by `ride_moves.move`; the UPDATE is conditional on the status the caller
    saw (`Conflict` if the ride moved meanwhile); `changes` are other columns set in the same
    statement (e.g. the assigned driver). Records the history row and emits `ride:status` to the
    ride's and both users' rooms after the commit. Returns the move: the caller reacts to it
    (payments, notifications, the driver freed) in the same transaction.
    """
    changes = dict(changes or {})
    state = RideState(ride.id, ride.status, ride.customer_id, changes.get("driver_id", ride.driver_id))
    moved = ride_moves.move(state, target, by=Mover(actor.role, actor.id), reason=reason,
                            at=datetime.now(UTC))
    values: dict[str, Any] = {**changes, "status": moved.after, "updated_at": moved.at}
    result = await uow.session.execute(
        update(Ride).where(Ride.id == ride.id, Ride.status == moved.before).values(**values)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise Conflict("The ride changed meanwhile; reload it.", details={"status": moved.before.value})
    for name, value in values.items():
        set_committed_value(ride, name, value)
    await uow.session.execute(moved.history_row)
    payload, rooms = moved.event, list(moved.rooms)
    on_map = live_map.ride_emit(ride, at=moved.at)

    async def emit() -> None:
        await publisher.emit("ride:status", payload, rooms)
        await publisher.emit(*on_map)

    uow.after_commit(emit)
    log.info("ride.status_changed", ride_id=str(ride.id), before=moved.before.value, after=moved.after.value,
             by=actor.role)
    return moved


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
