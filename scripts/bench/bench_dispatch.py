"""Benchmark: `dispatch.step` throughput with 100,000 online drivers in the GEO index.

    .venv/bin/python scripts/bench/bench_dispatch.py [--drivers 100000] [--steps 5000] [--inline-steps 2000]
    .venv/bin/python scripts/bench/bench_dispatch.py --profile /tmp/dispatch.svg   # + py-spy --gil, worker

On a private database, Redis prefix and Dramatiq namespace:

1. seeds `--drivers` online drivers spread uniformly over a 40 x 40 km box (~62 per km² at 100k,
   as in PERFORMANCE-NOTES): `users` + `drivers` rows with COPY, and the GEO index with
   `DriverIndexReader.place_many`; all drivers have one vehicle type, so one GEO key holds them all;
2. stores `--steps` rides (PENDING_BIDS, pickups uniform over the box) and writes one
   `dispatch.step(ride, 0)` ledger row per ride (what `POST /rides` writes; the worker's dispatcher
   runs them in batches of DISPATCH_BATCH_SIZE, or, with `--worker-env DISPATCH_BATCHED=0`, its
   relay hands each to Redis as one Dramatiq message), then starts ONE worker as the Procfile
   does (`python -m workers.run`, WORKER_PROCESSES=1, other worker settings as configured) and
   times the drain: steps/s from the
   rides' `updated_at` (stamped by each step as it claims the round), first to last;
3. runs `--inline-steps` more steps in this process in a tight loop — the service, its session and
   commit, the index search and the emits exactly as the job runs them, without Dramatiq — timing
   each part, to show what the broker and the worker machinery add.

Each step offers up to DISPATCH_MAX_OFFERS_PER_ROUND (default 20) drivers: 20 offer rows and 20 `ride:offer`
emits. DRIVER_STALE_AFTER is raised to 3600 s for this run so the seeded positions stay fresh for
its whole length (it changes which drivers count, not the work a step does).

Exits 1 if steps failed or did not finish in `--timeout`, 2 if it could not run, 3 with
`--fail-under-target` when the target was missed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg
import redis

from app.adapters.driver_index import DriverIndexReader
from app.adapters.realtime import Publisher
from app.db import UnitOfWork, create_sync_engine, sync_session_factory
from app.keys import DISPATCH_STEP, RedisKeys
from app.logging import configure_logging
from app.outbox import INSERT_JOB
from app.services import dispatch
from app.settings import Settings
from scripts.bench.driver_seed import FRESH_ENV, box_point, copy_people, index_drivers
from scripts.bench.harness import BenchError, add_settings_option, parse_settings, record_result, say
from scripts.bench.measure import (
    CpuMeter,
    RedisCpu,
    load_average_text,
    percentiles,
    print_table,
    stamp_rates,
    verdict,
)
from scripts.bench.processes import busiest, wait_until
from scripts.bench.profiling import start_profiler, stop_profiler
from scripts.bench.session import BenchSession, run_on_stack

TARGET_STEPS_PER_S = 1_000
REGION = "BNCH"
VEHICLE = "van"
CENTER = (52.52, 13.405)
BOX_KM = 40.0
POLL_S = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dispatch.step throughput with 100k drivers indexed")
    parser.add_argument("--drivers", type=int, default=100_000, help="online drivers (default 100000)")
    parser.add_argument("--steps", type=int, default=5_000, help="steps drained by the worker (default 5000)")
    parser.add_argument("--inline-steps", type=int, default=2_000,
                        help="steps run in this process without Dramatiq (default 2000; 0 to skip)")
    parser.add_argument("--timeout", type=float, default=240.0, help="give the drain up to this long (s)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="sample the worker with py-spy during the drain (.svg, .txt or .json)")
    parser.add_argument("--profile-wall", action="store_true",
                        help="profile every thread's wall time (default: only the thread holding the GIL, "
                             "py-spy --gil: where the worker's CPU goes)")
    add_settings_option(parser, "--worker-env",
                        help="a setting for the worker and the in-process loop, e.g. WORKER_THREADS=1 or "
                             "DISPATCH_MAX_OFFERS_PER_ROUND=5 (repeatable; to see what moves the figure)")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    args.worker_env = parse_settings(parser, "--worker-env", args.worker_env)
    if args.drivers < 1 or args.steps < 2 or args.inline_steps < 0 or args.timeout <= 0:
        parser.error("--drivers must be positive, --steps at least 2, --inline-steps not negative")
    return args


# --- seeding --------------------------------------------------------------------------------------
def seed_rides(dsn: str, customer: uuid.UUID, count: int, rng: random.Random) -> list[uuid.UUID]:
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY rides (id, customer_id, region_code, vehicle_type, payment_method, pickup_lat, "
                      "pickup_lng, dropoff_lat, dropoff_lng, distance_km, status, created_at, updated_at) "
                      "FROM STDIN") as copy:
            for ride_id in ids:
                (plat, plng), (dlat, dlng) = box_point(rng, CENTER, BOX_KM), box_point(rng, CENTER, BOX_KM)
                copy.write_row((ride_id, customer, REGION, VEHICLE, "card", plat, plng, dlat, dlng, 10.0,
                                "PENDING_BIDS", now, now))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE rides")
    return ids


def enqueue_steps(settings: Settings, dsn: str, ride_ids: list[uuid.UUID]) -> None:
    """One `dispatch.step(ride, 0)` ledger row per ride, as `POST /rides` writes it. The worker's
    dispatcher runs them in batches; with `--per-message` (DISPATCH_BATCHED=0) its relay hands each
    to Redis as its own Dramatiq message instead."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            INSERT_JOB + f" SELECT gen_random_uuid(), {DISPATCH_STEP.sql}, "
            "jsonb_build_array(CAST(r AS text), 0), '{}', '{}', now(), now() "
            "FROM unnest(CAST(%s AS uuid[])) AS r",
            (ride_ids,))


# --- the worker drain -----------------------------------------------------------------------------------
@dataclass
class Drain:
    done: int = 0
    failed_jobs: int = 0
    wall_s: float = 0.0
    rate_first_last: float = 0.0
    rate_middle: float = 0.0
    worker_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    offers_per_step: float = 0.0
    timed_out: bool = False


def count_steps(conn: psycopg.Connection[Any], customer: uuid.UUID) -> int:
    row = conn.execute("SELECT count(*) FROM rides WHERE customer_id = %s AND dispatch_round = 0",
                       (customer,)).fetchone()
    return int(row[0]) if row else 0


def step_rates(conn: psycopg.Connection[Any], customer: uuid.UUID) -> tuple[float, float]:
    """Steps/s from the claim stamps: first to last, and over the middle 80 % (no start-up, no tail)."""
    return stamp_rates([float(r[0]) for r in conn.execute(
        "SELECT extract(epoch FROM updated_at) FROM rides WHERE customer_id = %s AND dispatch_round = 0 "
        "ORDER BY updated_at", (customer,))])


def drain(args: argparse.Namespace, session: BenchSession, customer: uuid.UUID,
          env: dict[str, str]) -> Drain:
    result = Drain()
    worker = session.start_worker({"WORKER_PROCESSES": "1", **env})
    conn = session.postgres()
    started_by = time.monotonic() + args.timeout
    # the worker imports, boots, takes its first message
    if not wait_until(lambda: count_steps(conn, customer) > 0, timeout_s=args.timeout, process=worker):
        raise BenchError(f"the worker ran no step in {args.timeout:.0f} s")
    profiler = None
    if session.py_spy:
        profiler = start_profiler(session.py_spy, busiest(worker.pids()), int(args.timeout) + 5,
                                  args.profile, () if args.profile_wall else ("--gil",))
    try:
        meter = CpuMeter({"worker": worker, "redis": RedisCpu(session.redis())})
        meter.start()
        started = time.monotonic()
        result.timed_out = not wait_until(lambda: count_steps(conn, customer) >= args.steps,
                                          timeout_s=started_by - started, process=worker, poll_s=POLL_S)
        meter.stop()
        result.wall_s = time.monotonic() - started
    finally:
        if profiler is not None:
            stop_profiler(profiler, args.profile)
    result.redis_cpu_pct = meter.percent["redis"]
    result.worker_cpu_pct, result.machine_busy_pct = meter.percent["worker"], meter.machine_busy
    result.done = count_steps(conn, customer)
    result.rate_first_last, result.rate_middle = step_rates(conn, customer)
    row = conn.execute("SELECT count(*) FROM failed_jobs").fetchone()
    result.failed_jobs = int(row[0]) if row else 0
    row = conn.execute("SELECT count(*) FROM offers o JOIN rides r ON r.id = o.ride_id "
                       "WHERE r.customer_id = %s", (customer,)).fetchone()
    result.offers_per_step = (int(row[0]) if row else 0) / max(result.done, 1)
    worker.stop(keep_log=result.timed_out or result.failed_jobs > 0)
    return result


# --- the same steps in this process, no Dramatiq ---------------------------------------------------
@dataclass
class Inline:
    steps: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    parts_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.steps / self.wall_s if self.wall_s else 0.0


class TimedIndex:
    def __init__(self, index: DriverIndexReader, spent: list[float]) -> None:
        self._index, self._spent = index, spent

    def nearby(self, *args: Any, **kwargs: Any) -> list[tuple[uuid.UUID, float]]:
        started = time.perf_counter()
        try:
            return self._index.nearby(*args, **kwargs)
        finally:
            self._spent.append(time.perf_counter() - started)


def run_inline(settings: Settings, ride_ids: list[uuid.UUID]) -> Inline:
    """What `jobs.dispatch.step` + `SessionPerMessage` do per message, in a loop, one thread."""
    engine = create_sync_engine(settings.db, pool_size=2)
    sessions = sync_session_factory(engine)
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    publisher = Publisher(settings.redis)
    search: list[float] = []
    index = TimedIndex(DriverIndexReader(client, RedisKeys(settings.redis)), search)
    emitted: list[float] = []

    def emit(event: str, payload: dict[str, Any], room: str | list[str]) -> None:
        started = time.perf_counter()
        publisher.emit(event, payload, room)
        emitted.append(time.perf_counter() - started)

    def emit_many(events: list[tuple[str, dict[str, Any], str]]) -> None:
        started = time.perf_counter()
        publisher.emit_many(events)
        emitted.append(time.perf_counter() - started)

    parts: dict[str, list[float]] = {"step (SQL + Python)": [], "index search": [], "commit": [],
                                     "emits (after commit)": [], "session open/close": [], "total": []}
    result = Inline()
    try:
        cpu_before, started = time.process_time(), time.perf_counter()
        for ride_id in ride_ids:
            t0 = time.perf_counter()
            uow = UnitOfWork(sessions())
            t1 = time.perf_counter()
            searched, emits = len(search), len(emitted)
            dispatch.step(uow.session, index, settings.dispatch, ride_id, 0, after_commit=uow.after_commit,
                          emit=emit, emit_many=emit_many)
            t2 = time.perf_counter()
            uow.commit()  # the commit, then the after-commit emits
            t3 = time.perf_counter()
            uow.close()
            t4 = time.perf_counter()
            search_s, emit_s = sum(search[searched:]), sum(emitted[emits:])
            parts["session open/close"].append((t1 - t0 + t4 - t3) * 1000)
            parts["step (SQL + Python)"].append((t2 - t1 - search_s) * 1000)
            parts["index search"].append(search_s * 1000)
            parts["commit"].append((t3 - t2 - emit_s) * 1000)
            parts["emits (after commit)"].append(emit_s * 1000)
            parts["total"].append((t4 - t0) * 1000)
        result.wall_s = time.perf_counter() - started
        result.cpu_s = time.process_time() - cpu_before
        result.steps = len(ride_ids)
        result.parts_ms = parts
    finally:
        publisher.close()
        client.close()
        engine.dispose()
    return result


# --- report -----------------------------------------------------------------------------------------
def report(args: argparse.Namespace, drained: Drain, inline: Inline | None, load: str, seed_s: float) -> None:
    print(f"\ndispatch.step  ·  {args.drivers:,} online drivers (one vehicle type) over "
          f"{BOX_KM:g} x {BOX_KM:g} km "
          f"(~{args.drivers / BOX_KM ** 2:.0f}/km²), pickups uniform over the box  ·  first round (5 km, "
          f"probing from 1 km)  ·  up to 20 offers and emits per step")
    print(f"machine: {os.cpu_count()} CPUs, load average before the drain {load}; processes unpinned; "
          f"seeding took {seed_s:.1f} s")
    if args.worker_env:
        print("settings changed for this run: " + ", ".join(f"{k}={v}" for k, v in args.worker_env.items()))
    cpu_per_step_ms = drained.worker_cpu_pct / 100 / max(drained.rate_first_last, 1e-9) * 1000
    rows = [
        ("worker steps/s", f"{drained.rate_first_last:,.0f}", f">= {TARGET_STEPS_PER_S:,}",
         verdict(drained.rate_first_last >= TARGET_STEPS_PER_S)),
        ("  middle 80 % of the drain", f"{drained.rate_middle:,.0f}/s", "", ""),
        ("  steps done", f"{drained.done:,} / {args.steps:,}", "all", verdict(not drained.timed_out)),
        ("  failed jobs", str(drained.failed_jobs), "0", verdict(drained.failed_jobs == 0)),
        ("  offers per step", f"{drained.offers_per_step:.1f}", "", ""),
        ("  worker CPU", f"{drained.worker_cpu_pct:.0f} % of a core", "", ""),
        ("  worker CPU per step", f"{cpu_per_step_ms:.2f} ms", "", ""),
        ("  Redis CPU (shared)", f"{drained.redis_cpu_pct:.0f} % of a core", "", ""),
        ("  all CPUs busy", f"{drained.machine_busy_pct:.0f} %", "", ""),
    ]
    if inline is not None and inline.steps:
        rows += [
            ("in-process steps/s", f"{inline.rate:,.0f}", "", ""),
            ("  CPU per step (this proc.)", f"{inline.cpu_s / inline.steps * 1000:.2f} ms", "", ""),
        ]
    processes = args.worker_env.get("WORKER_PROCESSES", "1")
    title = "ONE worker process" if processes == "1" else f"{processes} worker processes (target per process)"
    print_table(f"{title} (python -m workers.run, WORKER_PROCESSES={processes})", rows, width=30)
    if inline is not None and inline.steps:
        print(f"\nIn-process loop, one thread, no Dramatiq ({inline.steps:,} steps): per-step wall time\n")
        print(f"{'part':26}{'mean':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'share':>8}")
        total = sum(inline.parts_ms["total"])
        for name, values in inline.parts_ms.items():
            p = percentiles(values)
            print(f"{name:26}{p['mean']:>8.2f}{p['p50']:>8.2f}{p['p95']:>8.2f}{p['p99']:>8.2f}"
                  f"{sum(values) / total * 100:>7.0f}%")
        per_step_inline = 1000 / inline.rate if inline.rate else 0.0
        per_step_worker = 1000 / drained.rate_first_last if drained.rate_first_last else 0.0
        print(f"(ms. Broker and worker machinery: {per_step_worker:.2f} ms of wall time per step in the "
              f"worker vs {per_step_inline:.2f} ms in this loop)")


@dataclass
class Measured:
    drained: Drain
    inline: Inline | None
    load: str
    seed_s: float


def seed(args: argparse.Namespace, session: BenchSession, settings: Settings,
         customers: tuple[uuid.UUID, uuid.UUID]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Drivers (rows + GEO index) and both customers; the worker's rides, enqueued, and the loop's."""
    stack = session.stack
    stack.add_region(REGION)
    rng = random.Random(20261122)
    say(f"seeding {args.drivers:,} drivers (PostgreSQL COPY + GEO index)")
    drivers = [(uuid.uuid4(), *box_point(rng, CENTER, BOX_KM)) for _ in range(args.drivers)]
    copy_people(stack.libpq_dsn, drivers, list(customers), vehicle_type=VEHICLE)
    index_drivers(settings, drivers, vehicle_type=VEHICLE)
    say(f"storing {args.steps:,} + {args.inline_steps:,} rides, enqueueing {args.steps:,} dispatch.step")
    worker_rides = seed_rides(stack.libpq_dsn, customers[0], args.steps, rng)
    inline_rides = seed_rides(stack.libpq_dsn, customers[1], args.inline_steps, rng)
    enqueue_steps(settings, stack.libpq_dsn, worker_rides)
    return worker_rides, inline_rides


def measure(args: argparse.Namespace, session: BenchSession) -> Measured:
    overrides = {**FRESH_ENV, "LOG_LEVEL": "WARNING", **args.worker_env}
    settings = session.stack.settings(**overrides)
    configure_logging(settings.log, process="bench")  # as the worker runs: no per-step log lines
    seeding = time.monotonic()
    worker_customer = uuid.uuid4()
    _, inline_rides = seed(args, session, settings, (worker_customer, uuid.uuid4()))
    seed_s = time.monotonic() - seeding
    load = load_average_text()
    say("starting one worker and timing the drain")
    drained = drain(args, session, worker_customer, overrides)
    inline: Inline | None = None
    if args.inline_steps:
        say(f"running {args.inline_steps:,} steps in this process (no Dramatiq)")
        inline = run_inline(settings, inline_rides)
    return Measured(drained, inline, load, seed_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), py_spy=bool(args.profile))
    if measured is None:
        return 2
    drained, inline = measured.drained, measured.inline
    report(args, drained, inline, measured.load, measured.seed_s)
    record_result("dispatch", {"drivers": args.drivers, "steps": args.steps, "worker_env": args.worker_env,
                               "drain": drained, "inline_steps_per_s": inline.rate if inline else None})
    if drained.timed_out or drained.failed_jobs:
        print("\nFAILED: steps failed or the drain did not finish", file=sys.stderr)
        return 1
    if args.fail_under_target and drained.rate_first_last < TARGET_STEPS_PER_S:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
