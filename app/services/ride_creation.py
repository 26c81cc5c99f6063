"""`POST /rides`: the ride, its first history row, its booking confirmation and its first round.

Every ride is four rows and two ledger jobs (the first `dispatch.step`; the confirmation's
`notifications.send`), written by one statement. A web process under load receives many rides at
once, so its `RideWriter` **coalesces** them: the rides that arrive while a statement is in flight
are written together by the next one — one round trip, one commit, one statement to plan for all
of them — and each request answers only once the statement holding its own ride has returned
(autocommit: durable). Idle, a ride is written at once, alone. At most `RIDE_WRITE_BATCH` rides
go in one statement, and at most `RIDE_WRITE_CONCURRENCY` statements of one process are in flight.

The statement is idempotent for its ride ids (`ON CONFLICT (id) DO NOTHING`; the other rows hang
off the ride's insert or have their own unique key), so the statement pool runs it once more after
a dropped connection. A ride naming an unknown region is not written and its request alone gets
the 400; a failed statement fails exactly the requests whose rides it held (nothing was written).

With a cap on open rides (`OPEN_RIDES_PER_CUSTOMER`), the statement runs in a transaction after
the advisory lock of each customer in it (taken in key order, so two statements can't deadlock):
each ride is written only while its customer has fewer open rides than the cap, counting the ones
earlier in the same statement, and the rest answer 409 `CONFLICT` (reason `OPEN_RIDE_LIMIT`).

**Scheduled rides.** A ride booked for later (`scheduledFor`, at least `DISPATCH_SCHEDULE_MIN_AHEAD`
and at most `DISPATCH_SCHEDULE_HORIZON_DAYS` ahead) is the same rows, written the same way, with
`rides.scheduled_for` set: its `dispatch.step(ride, 0)` row is due `DISPATCH_SCHEDULE_LEAD` before
it (or at once when that moment has passed), so the job ledger holds the dispatch until then, and
its confirmation is `ride_scheduled` instead of `booking_confirmed`. An immediate ride carries a
null `scheduled_for`, which leaves its statement as it was (the due time is `GREATEST(created_at,
NULL)`, the creation).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, LiteralString

import msgspec

from app.errors import Conflict, ValidationFailed
from app.keys import DISPATCH_STEP, NOTIFICATIONS_SEND
from app.logging import get_logger
from app.outbox import INSERT_JOB
from app.services.access import Principal
from app.services.notifications import SKIPPED_UNVERIFIED, channels, place, render, ride_key
from app.services.phone_verification import require_verified_phone
from app.settings import DispatchSettings, Settings
from app.statements import StatementPool, psycopg_named
from app.timestamps import rfc3339
from models import PaymentMethod, Ride, RideEvent, RideStatus, VehicleType
from models.ride_states import CUSTOMER

log = get_logger("rides")

EARTH_RADIUS_KM: Final = 6371.0088
#: A ride in one of these no longer counts against its customer's open-ride cap.
FINAL_STATUSES: Final = (RideStatus.COMPLETED, RideStatus.CANCELLED, RideStatus.NO_DRIVERS_AVAILABLE)
_FINAL_SQL: Final = ", ".join(f"'{s.value}'" for s in FINAL_STATUSES)

#: The per-ride columns, in the order `RideWriter` collects them: (name, PostgreSQL type).
_COLUMNS: Final = (
    ("id", "uuid"), ("customer_id", "uuid"), ("region_code", "text"), ("vehicle_type", "text"),
    ("payment_method", "text"), ("pickup_lat", "float8"), ("pickup_lng", "float8"),
    ("pickup_address", "text"), ("dropoff_lat", "float8"), ("dropoff_lng", "float8"),
    ("dropoff_address", "text"), ("notes", "text"), ("distance_km", "float8"), ("created_at", "timestamptz"),
    ("message_id", "uuid"), ("args", "text"), ("note_id", "uuid"), ("dedupe_key", "text"),
    ("note_params", "text"), ("body", "text"), ("scheduled_for", "timestamptz"),
)
_NAMES: Final = tuple(name for name, _ in _COLUMNS)
#: The customer's confirmation: of a ride dispatched at once, of a ride booked for later.
BOOKED: Final = "booking_confirmed"
SCHEDULED: Final = "ride_scheduled"


def _create_rides_sql(*, capped: bool) -> str:
    columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
    cap = f"""
      AND (SELECT count(*) FROM rides WHERE rides.customer_id = i.customer_id
           AND rides.status NOT IN ({_FINAL_SQL})) + i.nth <= :open_ride_cap""" if capped else ""
    unverified = "(:verified_only AND u.phone_verified_at IS NULL)"
    return f"""
WITH input AS (
    SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY ord) AS nth
    FROM jsonb_to_recordset(CAST(:rides AS jsonb)) AS i({columns}, ord int)
), valid AS (
    SELECT i.* FROM input i JOIN regions r ON r.code = i.region_code
    WHERE true{cap}
), ride AS (
    INSERT INTO rides (id, customer_id, region_code, vehicle_type, payment_method, pickup_lat, pickup_lng,
                       pickup_address, dropoff_lat, dropoff_lng, dropoff_address, notes, distance_km,
                       status, scheduled_for, created_at, updated_at)
    SELECT id, customer_id, region_code, vehicle_type, payment_method, pickup_lat, pickup_lng,
           pickup_address, dropoff_lat, dropoff_lng, dropoff_address, notes, distance_km,
           :status, scheduled_for, created_at, created_at
    FROM valid ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), written AS (
    SELECT v.* FROM valid v JOIN ride USING (id)
), history AS (
    INSERT INTO ride_history (ride_id, from_status, to_status, actor_id, actor_role, at)
    SELECT id, NULL, :status, customer_id, :role, created_at FROM written
), note AS (
    INSERT INTO notifications (id, user_id, template, dedupe_key, params, channel, recipient, body,
                               status, error_code, error_message, attempts, created_at, updated_at)
    SELECT w.note_id, u.id, CASE WHEN w.scheduled_for IS NULL THEN :template ELSE :scheduled_template END,
           w.dedupe_key, CAST(w.note_params AS jsonb),
           CASE WHEN u.whatsapp_opt_in THEN :opt_in_channel ELSE :channel END,
           u.phone, w.body, CASE WHEN {unverified} THEN 'skipped' ELSE 'queued' END,
           CASE WHEN {unverified} THEN '{SKIPPED_UNVERIFIED}' END,
           CASE WHEN {unverified} THEN 'not sent: the phone number is not verified' END,
           0, w.created_at, w.created_at
    FROM written w JOIN users u ON u.id = w.customer_id
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, status, created_at
), note_job AS (
    {INSERT_JOB}
    SELECT gen_random_uuid(), {NOTIFICATIONS_SEND.sql}, jsonb_build_array(CAST(id AS text)),
           '{{}}'::jsonb, '{{}}'::jsonb, created_at, created_at
    FROM note WHERE status = 'queued'
), step_job AS (
    {INSERT_JOB}
    SELECT message_id, {DISPATCH_STEP.sql}, CAST(args AS jsonb), '{{}}'::jsonb, '{{}}'::jsonb,
           created_at, GREATEST(created_at, scheduled_for - make_interval(secs => :schedule_lead_s))
    FROM written
)
SELECT i.ord, r.code IS NOT NULL, EXISTS (SELECT 1 FROM valid v WHERE v.ord = i.ord)
FROM input i LEFT JOIN regions r ON r.code = i.region_code
"""


_CREATE_RIDES: Final = psycopg_named(_create_rides_sql(capped=False))
_CREATE_CAPPED_RIDES: Final = psycopg_named(_create_rides_sql(capped=True))
#: Each customer's ride creations, one statement at a time (to the end of its transaction), so each
#: counts the open rides the one before it committed: exactly the cap succeed, however many race.
_OPEN_RIDES_LOCKS: Final = psycopg_named("""
SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
FROM (SELECT DISTINCT k FROM unnest(CAST(:lock_keys AS text[])) AS k ORDER BY k) AS keys
""")


# --- coalescing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What the statement did with one ride."""

    region_known: bool
    written: bool  # written now, or by an earlier run of the same statement (a retry)


class RideWriter:
    """Coalesces the ride creations of one web process into multi-row statements (module docstring)."""

    def __init__(self, statements: StatementPool, settings: Settings) -> None:
        self._statements = statements
        self._settings = settings
        self._max_batch = settings.web.ride_write_batch
        self._max_in_flight = settings.web.ride_write_concurrency
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Outcome]]] = []
        self._in_flight = 0
        self.statements_run = 0  # for the benchmarks: rides per statement = rides / this
        opt_in_channel, channel = channels(settings.twilio)
        twilio = settings.twilio
        self._constants = {
            "status": RideStatus.PENDING_BIDS.value, "role": CUSTOMER, "template": BOOKED,
            "scheduled_template": SCHEDULED, "schedule_lead_s": settings.dispatch.schedule_lead_s,
            "opt_in_channel": opt_in_channel, "channel": channel,
            "verified_only": bool(twilio and twilio.verified_numbers_only),
        }

    async def write(self, row: tuple[Any, ...]) -> Outcome:
        """Write one ride (its `_COLUMNS` values) with whatever else is waiting; its outcome."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._start_statements()
        return await future

    def _start_statements(self) -> None:
        while self._pending and self._in_flight < self._max_in_flight:
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._execute([row for row, _ in batch])
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # a request cancelled meanwhile: its ride is written all the same
                    future.set_result(outcome)
        finally:
            self._in_flight -= 1
            self._start_statements()

    async def _execute(self, rows: list[tuple[Any, ...]]) -> list[Outcome]:
        # The rides as one JSON parameter (msgspec encodes it in C; PostgreSQL reads it as a record
        # set): twenty array parameters cost the web more to dump than the statement costs to run.
        rides = [dict(zip(_NAMES, row, strict=True), ord=i) for i, row in enumerate(rows, start=1)]
        params: dict[str, Any] = {"rides": msgspec.json.encode(rides).decode(), **self._constants}
        cap = self._settings.limits.open_rides_per_customer
        self.statements_run += 1
        if cap:
            sql: LiteralString = _CREATE_CAPPED_RIDES
            result = await self._statements.fetch_all_in_transaction([
                (_OPEN_RIDES_LOCKS, {"lock_keys": [f"open-rides:{row[1]}" for row in rows]}),
                (sql, {**params, "open_ride_cap": cap}),
            ])
        else:
            result = await self._statements.fetch_all(_CREATE_RIDES, params)
        by_ord = {int(ord_): Outcome(bool(known), bool(written)) for ord_, known, written in result}
        return [by_ord[i] for i in range(1, len(rows) + 1)]


# --- the service ---------------------------------------------------------------------------------
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
    #: When the pickup is wanted (timezone-aware); None: now, dispatched at once.
    scheduled_for: datetime | None = None


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def ride_row(ride_id: uuid.UUID, customer_id: uuid.UUID, request: RideRequest,
             now: datetime) -> tuple[Any, ...]:
    """The `_COLUMNS` values of one ride (with its first round's job and its confirmation: the
    statement picks the template by the same rule, `scheduled_for` null or not)."""
    pickup, dropoff = request.pickup, request.dropoff
    note_params = {"rideId": str(ride_id), "vehicleType": request.vehicle_type,
                   "pickup": place(pickup.address, pickup.lat, pickup.lng)}
    template = BOOKED
    if request.scheduled_for is not None:
        template = SCHEDULED
        note_params["scheduledFor"] = rfc3339(request.scheduled_for)
    return (
        ride_id, customer_id, request.region, request.vehicle_type, request.payment_method,
        pickup.lat, pickup.lng, pickup.address, dropoff.lat, dropoff.lng, dropoff.address, request.notes,
        round(haversine_km(pickup.lat, pickup.lng, dropoff.lat, dropoff.lng), 3), now,
        uuid.uuid4(), msgspec.json.encode([str(ride_id), 0]).decode(),
        uuid.uuid4(), ride_key(ride_id, template), msgspec.json.encode(note_params).decode(),
        render(template, note_params), request.scheduled_for,
    )


def check_schedule(scheduled_for: datetime, now: datetime, settings: DispatchSettings) -> None:
    """A ride may be booked `DISPATCH_SCHEDULE_MIN_AHEAD` to `DISPATCH_SCHEDULE_HORIZON_DAYS` ahead;
    `ValidationFailed` naming `scheduledFor` otherwise."""
    earliest = now + timedelta(seconds=settings.schedule_min_ahead_s)
    latest = now + timedelta(days=settings.schedule_horizon_days)
    if scheduled_for < earliest:
        problem = f"must be at least {_duration(settings.schedule_min_ahead_s)} from now"
    elif scheduled_for > latest:
        problem = f"must be at most {settings.schedule_horizon_days} days from now"
    else:
        return
    raise ValidationFailed(f"scheduledFor {problem} (between {rfc3339(earliest)} and {rfc3339(latest)}).",
                           details={"scheduledFor": problem})


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


async def create_ride(writer: RideWriter, principal: Principal, request: RideRequest, *,
                      settings: Settings) -> tuple[Ride, RideEvent]:
    """Store the ride as PENDING_BIDS (module docstring); the ride and its first history entry."""
    principal.require_role(CUSTOMER)
    require_verified_phone(principal, settings)
    now = datetime.now(UTC)
    if request.scheduled_for is not None:
        check_schedule(request.scheduled_for, now, settings.dispatch)
    ride_id = uuid.uuid4()
    row = ride_row(ride_id, principal.id, request, now)
    outcome = await writer.write(row)
    if not outcome.region_known:
        raise ValidationFailed("Unknown region.", details={"region": "unknown region code"})
    if not outcome.written:
        cap = settings.limits.open_rides_per_customer
        log.info("ride.open_ride_limit", customer_id=str(principal.id), limit=cap)
        raise Conflict(f"You already have {cap} open rides; finish or cancel one first.",
                       details={"reason": "OPEN_RIDE_LIMIT", "limit": cap})
    ride = Ride(id=ride_id, customer_id=principal.id, region_code=request.region,
                vehicle_type=VehicleType(request.vehicle_type),
                payment_method=PaymentMethod(request.payment_method),
                pickup_lat=request.pickup.lat, pickup_lng=request.pickup.lng,
                pickup_address=request.pickup.address, dropoff_lat=request.dropoff.lat,
                dropoff_lng=request.dropoff.lng, dropoff_address=request.dropoff.address,
                notes=request.notes, distance_km=row[12], status=RideStatus.PENDING_BIDS,
                scheduled_for=request.scheduled_for, created_at=now, updated_at=now)
    log.info("ride.created", ride_id=str(ride_id), region=request.region, vehicle_type=request.vehicle_type)
    event = RideEvent(ride_id=ride_id, from_status=None, to_status=RideStatus.PENDING_BIDS.value,
                      actor_id=principal.id, actor_role=CUSTOMER, reason=None, at=now)
    return ride, event
