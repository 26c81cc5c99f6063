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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.adapters.driver_index import NearbyQuery
from app.keys import DISPATCH_CHECK_BIDS, DISPATCH_STEP, driver_room, ride_room
from app.logging import get_logger
from app.outbox import INSERT_JOB, add_job
from app.services import notifications, ride_expiry
from app.settings import DispatchSettings, TwilioSettings
from app.timestamps import rfc3339
from models import Offer, Ride, RideStatus

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



def _offer_payload(ride: Any, distance_km: float, round_: int, expires_at: datetime) -> dict[str, Any]:
    return {
        "rideId": str(ride.id),
        "pickup": {"lat": ride.pickup_lat, "lng": ride.pickup_lng, "address": ride.pickup_address},
        "dropoff": {"lat": ride.dropoff_lat, "lng": ride.dropoff_lng, "address": ride.dropoff_address},
        "vehicleType": str(ride.vehicle_type),
        "distanceKm": round(distance_km, 3),
        "round": round_,
        "expiresAt": rfc3339(expires_at),
        # a ride booked ahead: when its customer wants the pickup (what the driver bids for)
        "scheduledFor": rfc3339(ride.scheduled_for) if ride.scheduled_for else None,
    }


# The rounds' claim: a compare-and-set on `dispatch_round` of every ride of the batch that also
# returns what the offers need (and which drivers the ride was already offered, so widening never
# offers anyone twice). Rides are locked in id order, whoever else claims some of them.
_CLAIM_ROUNDS = text("""
UPDATE rides SET dispatch_round = v.round, updated_at = :now
FROM (SELECT * FROM unnest(CAST(:ride_ids AS uuid[]), CAST(:rounds AS int[])) AS u(ride_id, round)
      ORDER BY ride_id) AS v
WHERE rides.id = v.ride_id AND rides.status = 'PENDING_BIDS'
  AND (CASE WHEN v.round = 0 THEN rides.dispatch_round IS NULL ELSE rides.dispatch_round = v.round - 1 END)
RETURNING rides.id, v.round, rides.vehicle_type, rides.pickup_lat, rides.pickup_lng, rides.pickup_address,
          rides.dropoff_lat, rides.dropoff_lng, rides.dropoff_address,
          ARRAY(SELECT driver_id FROM offers WHERE offers.ride_id = rides.id) AS offered, rides.scheduled_for
""")

# Eligibility, the offers and the bid checks' ledger rows of the whole batch in one statement: each
# ride's candidates come from the GEO index nearest first; a driver must be online, free and not
# suspended; each ride gets its nearest `max_offers` eligible ones (a driver near two rides of the
# batch is offered both, as two rounds run one after the other would).
_OFFER_ROUNDS = text("""
WITH candidate AS (
    SELECT c.ride_id, c.driver_id, c.rank,
           CAST(round(CAST(c.distance_km AS numeric), 3) AS float8) AS distance_km
    FROM unnest(CAST(:cand_rides AS uuid[]), CAST(:cand_drivers AS uuid[]),
                CAST(:cand_distances AS float8[]), CAST(:cand_ranks AS int[]))
         AS c(ride_id, driver_id, distance_km, rank)
), chosen AS (
    SELECT ride_id, driver_id, distance_km, rank FROM (
        SELECT c.ride_id, c.driver_id, c.distance_km, c.rank,
               row_number() OVER (PARTITION BY c.ride_id ORDER BY c.rank) AS n
        FROM candidate c
        JOIN drivers d ON d.user_id = c.driver_id
        JOIN users u ON u.id = c.driver_id
        WHERE d.availability = 'online' AND d.active_ride_id IS NULL AND u.is_active
    ) eligible
    WHERE n <= :max_offers
), claimed AS (
    SELECT * FROM unnest(CAST(:ride_ids AS uuid[]), CAST(:rounds AS int[]), CAST(:message_ids AS uuid[]),
                         CAST(:args AS text[])) AS r(ride_id, round, message_id, args)
), offered AS (
    INSERT INTO offers (ride_id, driver_id, round, distance_km, expires_at, created_at)
    SELECT c.ride_id, c.driver_id, r.round, c.distance_km, :expires_at, :now
    FROM chosen c JOIN claimed r ON r.ride_id = c.ride_id
    ORDER BY c.ride_id, c.rank
    ON CONFLICT (ride_id, driver_id) DO NOTHING
    RETURNING ride_id, driver_id, distance_km
), bid_check AS (
    """ + INSERT_JOB + """
    SELECT r.message_id, """ + DISPATCH_CHECK_BIDS.sql + """, CAST(r.args AS jsonb), '{}'::jsonb, '{}'::jsonb,
           :now, :check_due_at
    FROM claimed r
)
SELECT ride_id, driver_id, distance_km FROM offered
""")


@dataclass(frozen=True)
class _RideForOffers:
    id: uuid.UUID
    scheduled_for: datetime | None
    vehicle_type: str
    pickup_lat: float
    pickup_lng: float
    pickup_address: str | None
    dropoff_lat: float
    dropoff_lng: float
    dropoff_address: str | None


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of uuids or numbers (their text has no quotes, commas or braces):
    thousands of candidates in one parameter, without dumping each element on its own."""
    return "{" + ",".join(map(str, values)) + "}"


def _search(drivers: NearbyDrivers, queries: list[NearbyQuery], *, limit: int,
            seen_after: float) -> list[list[tuple[str, str]]]:
    """Every ride's candidates as text `(driver id, km)`, as Redis answers them (they go straight
    into the offers statement), in one round trip when the index can batch (the Redis one can)."""
    many = getattr(drivers, "nearby_many", None)
    if many is not None:
        return list(many(queries, limit=limit, seen_after=seen_after, as_text=True))
    return [[(str(d), repr(km)) for d, km in drivers.nearby(q.vehicle_type, q.lat, q.lng, q.radius_km,
                                                            limit=limit, seen_after=seen_after,
                                                            exclude=set(q.exclude))]
            for q in queries]


def step(session: Session, drivers: NearbyDrivers, settings: DispatchSettings, ride_id: uuid.UUID,
         round_: int, *, after_commit: Callable[[Callable[[], None]], None], emit: Emit,
         emit_many: EmitMany | None = None, now: datetime | None = None) -> StepResult:
    """Run dispatch round `round_` for the ride (see the module docstring): a batch of one."""
    return step_many(session, drivers, settings, [(ride_id, round_)], after_commit=after_commit,
                     emit=emit, emit_many=emit_many, now=now)[0]


def step_many(session: Session, drivers: NearbyDrivers, settings: DispatchSettings,
              rounds: Sequence[tuple[uuid.UUID, int]], *, after_commit: Callable[[Callable[[], None]], None],
              emit: Emit, emit_many: EmitMany | None = None, now: datetime | None = None) -> list[StepResult]:
    """Run many dispatch rounds `(ride_id, round)` together; one result per item, in order.

    The hot path of the farm, the same for one ride or two hundred: two SQL statements (claim;
    eligibility + offers + bid checks), one pipeline of index searches between them, and after
    commit one Redis pipeline for every offer of the batch. A round that can't be claimed (done
    already, the ride moved on) re-sends its open offers instead (see the module docstring).
    """
    now = now or datetime.now(UTC)
    results: list[StepResult] = [StepResult(False, [])] * len(rounds)
    in_range = [i for i, (_, round_) in enumerate(rounds) if 0 <= round_ < len(settings.radii_km)]
    for i in set(range(len(rounds))) - set(in_range):
        log.warning("dispatch.round_out_of_range", ride_id=str(rounds[i][0]), round=rounds[i][1])
    for wave in _waves(rounds, in_range):
        done = _step_wave(session, drivers, settings, dict(rounds[i] for i in wave), now, after_commit,
                          emit, emit_many)
        for i in wave:
            results[i] = done[rounds[i]]
    return results


AfterCommit = Callable[[Callable[[], None]], None]


def _step_wave(session: Session, drivers: NearbyDrivers, settings: DispatchSettings,
               wanted: dict[uuid.UUID, int], now: datetime, after_commit: AfterCommit,
               emit: Emit, emit_many: EmitMany | None) -> dict[tuple[uuid.UUID, int], StepResult]:
    results: dict[tuple[uuid.UUID, int], StepResult] = {}
    claimed = session.execute(_CLAIM_ROUNDS, {
        "ride_ids": list(wanted), "rounds": list(wanted.values()), "now": now}).all() if wanted else []
    rides = [(_RideForOffers(row[0], row[10], *row[2:9]), int(row[1]), list(row[9])) for row in claimed]
    for ride_id in set(wanted) - {ride.id for ride, _, _ in rides}:
        _resend_open_offers(session, ride_id, wanted[ride_id], now, after_commit, emit)
        results[(ride_id, wanted[ride_id])] = StepResult(False, [])

    expires_at = now + timedelta(seconds=settings.bid_window_s)
    chosen = _offer_rounds(session, drivers, settings, rides, now, expires_at) if rides else {}

    rounds: list[tuple[dict[str, Any], list[tuple[uuid.UUID, float]]]] = []
    for ride, round_, _ in rides:
        offers = sorted(chosen[ride.id], key=lambda row: row[1])
        rounds.append((_offer_payload(ride, 0.0, round_, expires_at), offers))
        results[(ride.id, round_)] = StepResult(True, [d for d, _ in offers])
        log.debug("dispatch.round_started", ride_id=str(ride.id), round=round_,
                  radius_km=settings.radii_km[round_], offered=len(offers))

    def send_offers() -> None:
        at = rfc3339(datetime.now(UTC))  # one `at` for the batch's offers: they are sent together
        events = [("ride:offer", {**base, "distanceKm": km, "at": at}, driver_room(driver_id))
                  for base, offers in rounds for driver_id, km in offers]
        if emit_many is not None:
            emit_many(events)
            return
        for event, payload, room in events:
            emit(event, payload, room)

    offered = sum(len(offers) for _, offers in rounds)
    if offered:
        after_commit(send_offers)
    if rides:
        log.info("dispatch.rounds_started", rides=len(rides), offers=offered,
                 **({"ride_id": str(rides[0][0].id), "round": rides[0][1]} if len(rides) == 1 else {}))
    return results


def _offer_rounds(session: Session, drivers: NearbyDrivers, settings: DispatchSettings,
                  rides: list[tuple[_RideForOffers, int, list[uuid.UUID]]], now: datetime,
                  expires_at: datetime) -> dict[uuid.UUID, list[tuple[uuid.UUID, float]]]:
    """The claimed rounds' candidates (one pipeline of index searches), then their offers and bid
    checks (`_OFFER_ROUNDS`, one statement): each ride's drivers offered, with their distance."""
    found = _search(drivers, [NearbyQuery(ride.vehicle_type, ride.pickup_lat, ride.pickup_lng,
                                          settings.radii_km[round_], frozenset(already))
                              for ride, round_, already in rides],
                    limit=settings.max_offers_per_round * 2,
                    seen_after=(now - timedelta(seconds=settings.driver_stale_after_s)).timestamp())
    candidates = [(ride_text, driver_id, km, rank)
                  for (ride, _, _), near in zip(rides, found, strict=True)
                  for ride_text in (str(ride.id),)
                  for rank, (driver_id, km) in enumerate(near, start=1)]
    chosen: dict[uuid.UUID, list[tuple[uuid.UUID, float]]] = {ride.id: [] for ride, _, _ in rides}
    for ride_id, driver_id, km in session.execute(_OFFER_ROUNDS, {
        "cand_rides": _array(c[0] for c in candidates),
        "cand_drivers": _array(c[1] for c in candidates),
        "cand_distances": _array(c[2] for c in candidates),
        "cand_ranks": _array(c[3] for c in candidates),
        "max_offers": settings.max_offers_per_round, "expires_at": expires_at, "now": now,
        "ride_ids": [ride.id for ride, _, _ in rides], "rounds": [r for _, r, _ in rides],
        "message_ids": [uuid.uuid4() for _ in rides],
        "args": [json.dumps([str(ride.id), r]) for ride, r, _ in rides],
        "check_due_at": expires_at,
    }).all():
        chosen[ride_id].append((driver_id, km))
    return chosen


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


# The checks' claim for a batch: a compare-and-set on `checked_round` of each ride still waiting in
# that round, with its live bids counted (and the lowest, for the customer's message).
_CLAIM_CHECKS = text("""
UPDATE rides SET checked_round = v.round, updated_at = :now
FROM (SELECT * FROM unnest(CAST(:ride_ids AS uuid[]), CAST(:rounds AS int[])) AS u(ride_id, round)
      ORDER BY ride_id) AS v
WHERE rides.id = v.ride_id AND rides.status = 'PENDING_BIDS' AND rides.dispatch_round = v.round
  AND (rides.checked_round IS NULL OR rides.checked_round < v.round)
RETURNING rides.id, v.round, rides.customer_id,
    (SELECT count(*) FROM bids WHERE bids.ride_id = rides.id AND bids.status = 'PENDING'),
    (SELECT min(amount) FROM bids WHERE bids.ride_id = rides.id AND bids.status = 'PENDING'),
    (SELECT min(currency) FROM bids WHERE bids.ride_id = rides.id AND bids.status = 'PENDING')
""")


def _waves(items: Sequence[tuple[uuid.UUID, int]], indices: Sequence[int]) -> list[list[int]]:
    """The `indices` of `items` in waves that name each ride once, in order: a second job for a
    ride runs after the first, as two messages would have."""
    waves: list[tuple[set[uuid.UUID], list[int]]] = []
    for i in indices:
        ride_id = items[i][0]
        wave = next((w for w in waves if ride_id not in w[0]), None)
        if wave is None:
            wave = (set(), [])
            waves.append(wave)
        wave[0].add(ride_id)
        wave[1].append(i)
    return [members for _, members in waves]


def check_bids(session: Session, settings: DispatchSettings, ride_id: uuid.UUID, round_: int, *,
               after_commit: Callable[[Callable[[], None]], None], emit: Emit,
               now: datetime | None = None, twilio: TwilioSettings | None = None) -> CheckResult:
    """After round `round_`'s bid window: bids → tell the customer; none → widen or give up.

    `twilio` is handed unopened to the notifications service, which picks the messages' channel
    with it (none: the console channel). A batch of one.
    """
    return check_many(session, settings, [(ride_id, round_)], after_commit=after_commit, emit=emit,
                      now=now, twilio=twilio)[0]


def check_many(session: Session, settings: DispatchSettings, checks: Sequence[tuple[uuid.UUID, int]], *,
               after_commit: Callable[[Callable[[], None]], None], emit: Emit,
               now: datetime | None = None, twilio: TwilioSettings | None = None) -> list[CheckResult]:
    """`check_bids` for many `(ride_id, round)`: one claim statement, then each ride's outcome."""
    now = now or datetime.now(UTC)
    results: list[CheckResult] = [CheckResult("skipped")] * len(checks)
    for wave in _waves(checks, range(len(checks))):
        claimed = session.execute(_CLAIM_CHECKS, {"ride_ids": [checks[i][0] for i in wave],
                                                  "rounds": [checks[i][1] for i in wave], "now": now}).all()
        outcomes = {(ride_id, int(round_)): _after_check(
            session, settings, ride_id, int(round_), customer_id, int(live_bids), lowest, currency,
            now=now, after_commit=after_commit, emit=emit, twilio=twilio)
            for ride_id, round_, customer_id, live_bids, lowest, currency in claimed}
        for i in wave:
            if checks[i] in outcomes:
                results[i] = outcomes[checks[i]]
            else:
                log.info("dispatch.check_skipped", ride_id=str(checks[i][0]), round=checks[i][1])
    return results


def _after_check(session: Session, settings: DispatchSettings, ride_id: uuid.UUID, round_: int,
                 customer_id: uuid.UUID, live_bids: int, lowest: int | None, currency: str | None, *,
                 now: datetime, after_commit: Callable[[Callable[[], None]], None], emit: Emit,
                 twilio: TwilioSettings | None) -> CheckResult:
    if live_bids:
        notifications.bids_ready(session, ride_id=ride_id, customer_id=customer_id, count=live_bids,
                                 round_=round_, lowest=lowest, currency=currency, settings=twilio)
        payload = {"rideId": str(ride_id), "count": live_bids, "round": round_}
        after_commit(lambda: emit("bids:ready", payload, ride_room(ride_id)))
        # The acceptance window starts now: the ride ends unless a bid is accepted in time.
        ride_expiry.schedule_acceptance_window(session, settings, ride_id, round_)
        log.info("dispatch.bids_ready", ride_id=str(ride_id), round=round_, bids=live_bids)
        return CheckResult("bids_ready", live_bids)

    if round_ + 1 < len(settings.radii_km):
        add_job(session, DISPATCH_STEP, str(ride_id), round_ + 1)
        log.info("dispatch.widening", ride_id=str(ride_id), next_round=round_ + 1)
        return CheckResult("next_round")

    if ride_expiry.move_by_system(session, ride_id, RideStatus.PENDING_BIDS, RideStatus.NO_DRIVERS_AVAILABLE,
                                  now=now, after_commit=after_commit, emit=emit) is not None:
        notifications.no_drivers(session, ride_id=ride_id, customer_id=customer_id, settings=twilio)
    log.info("dispatch.no_drivers", ride_id=str(ride_id), rounds=len(settings.radii_km))
    return CheckResult("no_drivers")
