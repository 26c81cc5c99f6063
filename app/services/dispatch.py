"""Dispatch: offer a ride to nearby drivers in widening rounds, then check for bids.

`step(ride, round)` claims the round with a compare-and-set on `rides.dispatch_round`, finds the
nearest eligible drivers within `radii_km[round]`, records their offers, schedules
`check_bids(ride, round)` after the bid window (outbox, same transaction) and — after commit —
sends each driver `ride:offer`. `check_bids` claims the check the same way, then tells the
customer the bids are ready, starts the next round, or ends the ride as NO_DRIVERS_AVAILABLE.

Both are idempotent: a redelivered or replayed message for a round already done changes nothing
(a step re-sends the round's still-open offers, since their first emit may have been lost with a
crashed worker). A ride that is no longer PENDING_BIDS (accepted, cancelled) stops the rounds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.keys import QUEUE_DISPATCH, driver_room, ride_room
from app.logging import get_logger
from app.outbox import INSERT_JOB, add_job
from app.services import ride_expiry
from app.services.notifications import notify, ride_key
from app.settings import DispatchSettings, TwilioSettings
from models import Bid, BidStatus, Offer, Ride, RideStatus

log = get_logger("dispatch")

Emit = Callable[[str, dict[str, Any], "str | list[str]"], None]
EmitMany = Callable[[list[tuple[str, dict[str, Any], str]]], None]


class NearbyDrivers(Protocol):
    """What dispatch needs from the driver index (`app.adapters.driver_index`)."""

    def nearby(self, vehicle_type: str, lat: float, lng: float, radius_km: float, *, limit: int,
               seen_after: float, exclude: set[uuid.UUID]) -> list[tuple[uuid.UUID, float]]: ...


@dataclass(frozen=True)
class StepResult:
    claimed: bool
    offered: list[uuid.UUID]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _offer_payload(ride: Any, distance_km: float, round_: int, expires_at: datetime) -> dict[str, Any]:
    return {
        "rideId": str(ride.id),
        "pickup": {"lat": ride.pickup_lat, "lng": ride.pickup_lng, "address": ride.pickup_address},
        "dropoff": {"lat": ride.dropoff_lat, "lng": ride.dropoff_lng, "address": ride.dropoff_address},
        "vehicleType": str(ride.vehicle_type),
        "distanceKm": round(distance_km, 3),
        "round": round_,
        "expiresAt": _iso(expires_at),
    }


# The round's claim: a compare-and-set on `dispatch_round` that also returns what the offers need
# (and which drivers this ride was already offered, so widening never offers anyone twice).
_CLAIM_ROUND = text("""
UPDATE rides SET dispatch_round = :round, updated_at = :now
WHERE id = :ride_id AND status = 'PENDING_BIDS'
  AND (CASE WHEN :round = 0 THEN dispatch_round IS NULL ELSE dispatch_round = :round - 1 END)
RETURNING vehicle_type, pickup_lat, pickup_lng, pickup_address, dropoff_lat, dropoff_lng,
          dropoff_address,
          ARRAY(SELECT driver_id FROM offers WHERE offers.ride_id = rides.id) AS offered
""")

# Eligibility, the offers and the bid check's outbox row in one statement: the candidates come
# from the GEO index nearest first; a driver must be online, free and not suspended.
_OFFER_ROUND = text("""
WITH candidate AS (
    SELECT c.driver_id, c.distance_km, c.rank
    FROM unnest(CAST(:driver_ids AS uuid[]), CAST(:distances AS float8[])) WITH ORDINALITY
         AS c(driver_id, distance_km, rank)
), chosen AS (
    SELECT c.driver_id, c.distance_km, c.rank
    FROM candidate c
    JOIN drivers d ON d.user_id = c.driver_id
    JOIN users u ON u.id = c.driver_id
    WHERE d.availability = 'online' AND d.active_ride_id IS NULL AND u.is_active
    ORDER BY c.rank
    LIMIT :max_offers
), offered AS (
    INSERT INTO offers (ride_id, driver_id, round, distance_km, expires_at, created_at)
    SELECT :ride_id, driver_id, :round, distance_km, :expires_at, :now
    FROM chosen ORDER BY rank
    ON CONFLICT (ride_id, driver_id) DO NOTHING
    RETURNING driver_id, distance_km
), bid_check AS (
    """ + INSERT_JOB + """
    VALUES (:message_id, :queue, 'dispatch.check_bids', CAST(:args AS jsonb), '{}'::jsonb, '{}'::jsonb,
            :now, :check_due_at)
)
SELECT driver_id, distance_km FROM offered
""")


@dataclass(frozen=True)
class _RideForOffers:
    id: uuid.UUID
    vehicle_type: str
    pickup_lat: float
    pickup_lng: float
    pickup_address: str | None
    dropoff_lat: float
    dropoff_lng: float
    dropoff_address: str | None


def step(session: Session, drivers: NearbyDrivers, settings: DispatchSettings, ride_id: uuid.UUID,
         round_: int, *, after_commit: Callable[[Callable[[], None]], None], emit: Emit,
         emit_many: EmitMany | None = None, now: datetime | None = None) -> StepResult:
    """Run dispatch round `round_` for the ride (see the module docstring).

    The hot path of the farm: two SQL statements (claim; eligibility + offers + bid check), one
    index search between them, and after commit one Redis pipeline for the round's offers.
    """
    now = now or datetime.now(UTC)
    if not 0 <= round_ < len(settings.radii_km):
        log.warning("dispatch.round_out_of_range", ride_id=str(ride_id), round=round_)
        return StepResult(False, [])
    claimed = session.execute(_CLAIM_ROUND, {"ride_id": ride_id, "round": round_, "now": now}).first()
    if claimed is None:
        _resend_open_offers(session, ride_id, round_, now, after_commit, emit)
        return StepResult(False, [])
    ride = _RideForOffers(ride_id, *claimed[:7])
    already: list[uuid.UUID] = claimed[7]

    radius = settings.radii_km[round_]
    candidates = drivers.nearby(
        ride.vehicle_type, ride.pickup_lat, ride.pickup_lng, radius,
        limit=settings.max_offers_per_round * 2,
        seen_after=(now - timedelta(seconds=settings.driver_stale_after_s)).timestamp(),
        exclude=set(already),
    )
    expires_at = now + timedelta(seconds=settings.bid_window_s)
    rows = session.execute(_OFFER_ROUND, {
        "driver_ids": [d for d, _ in candidates], "distances": [round(km, 3) for _, km in candidates],
        "max_offers": settings.max_offers_per_round, "ride_id": ride_id, "round": round_,
        "expires_at": expires_at, "now": now, "message_id": uuid.uuid4(), "queue": QUEUE_DISPATCH,
        "args": json.dumps([str(ride_id), round_]),
        "check_due_at": expires_at,
    }).all()
    chosen = sorted(((driver_id, km) for driver_id, km in rows), key=lambda row: row[1])
    payloads = [(d, _offer_payload(ride, km, round_, expires_at)) for d, km in chosen]

    def send_offers() -> None:
        if emit_many is not None:
            emit_many([("ride:offer", payload, driver_room(d)) for d, payload in payloads])
            return
        for driver_id, payload in payloads:
            emit("ride:offer", payload, driver_room(driver_id))

    after_commit(send_offers)
    log.info("dispatch.round_started", ride_id=str(ride_id), round=round_, radius_km=radius,
             candidates=len(candidates), offered=len(chosen))
    return StepResult(True, [d for d, _ in chosen])


def _resend_open_offers(session: Session, ride_id: uuid.UUID, round_: int, now: datetime,
                        after_commit: Callable[[Callable[[], None]], None], emit: Emit) -> None:
    """A redelivered step for a round already claimed: re-send its open offers, change nothing."""
    ride = session.get(Ride, ride_id)
    if ride is None or ride.status != RideStatus.PENDING_BIDS or ride.dispatch_round != round_:
        log.info("dispatch.step_skipped", ride_id=str(ride_id), round=round_)
        return
    offers = session.scalars(
        select(Offer).where(Offer.ride_id == ride_id, Offer.round == round_, Offer.expires_at > now)
    ).all()
    payloads = [(o.driver_id, _offer_payload(ride, o.distance_km, round_, o.expires_at)) for o in offers]

    def resend() -> None:
        for driver_id, payload in payloads:
            emit("ride:offer", payload, driver_room(driver_id))

    after_commit(resend)
    log.info("dispatch.step_redelivered", ride_id=str(ride_id), round=round_, offers=len(payloads))


@dataclass(frozen=True)
class CheckResult:
    outcome: str  # "skipped", "bids_ready", "next_round", "no_drivers"
    bids: int = 0


def check_bids(session: Session, settings: DispatchSettings, ride_id: uuid.UUID, round_: int, *,
               after_commit: Callable[[Callable[[], None]], None], emit: Emit,
               now: datetime | None = None, twilio: TwilioSettings | None = None) -> CheckResult:
    """After round `round_`'s bid window: bids → tell the customer; none → widen or give up.

    `twilio` picks the notifications' channel (none: the console channel).
    """
    now = now or datetime.now(UTC)
    ride = session.execute(
        update(Ride)
        .where(Ride.id == ride_id, Ride.status == RideStatus.PENDING_BIDS, Ride.dispatch_round == round_,
               (Ride.checked_round.is_(None)) | (Ride.checked_round < round_))
        .values(checked_round=round_, updated_at=now)
        .returning(Ride)
    ).scalar_one_or_none()
    if ride is None:
        log.info("dispatch.check_skipped", ride_id=str(ride_id), round=round_)
        return CheckResult("skipped")

    live_bids, lowest, currency = session.execute(
        select(func.count(), func.min(Bid.amount), func.min(Bid.currency))
        .where(Bid.ride_id == ride_id, Bid.status == BidStatus.PENDING)
    ).one()
    if live_bids:
        notify(session, user_id=ride.customer_id, template="bids_ready", settings=twilio,
               dedupe_key=ride_key(ride_id, "bids_ready", round_),
               params={"rideId": str(ride_id), "count": live_bids, "round": round_,
                       "lowestAmount": lowest, "currency": currency})
        payload = {"rideId": str(ride_id), "count": live_bids, "round": round_}
        after_commit(lambda: emit("bids:ready", payload, ride_room(ride_id)))
        # The acceptance window starts now: the ride ends unless a bid is accepted in time.
        ride_expiry.schedule_acceptance_window(session, settings, ride_id, round_)
        log.info("dispatch.bids_ready", ride_id=str(ride_id), round=round_, bids=live_bids)
        return CheckResult("bids_ready", live_bids)

    if round_ + 1 < len(settings.radii_km):
        add_job(session, "dispatch.step", QUEUE_DISPATCH, str(ride_id), round_ + 1)
        log.info("dispatch.widening", ride_id=str(ride_id), next_round=round_ + 1)
        return CheckResult("next_round")

    ride_expiry.move_by_system(session, ride_id, RideStatus.PENDING_BIDS, RideStatus.NO_DRIVERS_AVAILABLE,
                               now=now, after_commit=after_commit, emit=emit)
    notify(session, user_id=ride.customer_id, template="no_drivers", settings=twilio,
           dedupe_key=ride_key(ride_id, "no_drivers"), params={"rideId": str(ride_id)})
    log.info("dispatch.no_drivers", ride_id=str(ride_id), rounds=len(settings.radii_km))
    return CheckResult("no_drivers")
