"""Wake-on-work: how long a job waits, on an idle farm, from the commit that wrote it to its start.

    .venv/bin/python scripts/bench/bench_wake.py                 # 200 jobs of each kind, 10 a second
    .venv/bin/python scripts/bench/bench_wake.py --jobs 500 --rate 5

One worker process from the Procfile's `worker` line, on a private database and Redis prefix.
For each kind of job, one at a time at `--rate` per second (the idle case: each job finds the
worker waiting), the bench commits the row (and what the job needs) in one transaction and
measures from the moment the commit returned to the moment the job started, as the job itself
stamps it (same machine, same clock):

- **dispatch round** (`dispatch.step`, run by the dispatcher thread, woken by `LISTEN`): the ride's
  `updated_at`, which the round's claim sets to the moment the batch began;
- **notification** (`notifications.send`, the sender thread): the notification's `updated_at`, set
  by its claim (console channel: no provider);
- **Dramatiq job** (`sessions.end_sockets` of a user without sockets: relay → Redis → a Dramatiq
  consumer woken by its wake-up list): the ledger row's `finished_at`, which is `now()` of the
  job's own transaction — its first statement is the claim.

Target: p50 <= 5 ms for each. Exit codes: 0 done, 2 it could not run, 3 with
`--fail-under-target` when a p50 is over.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from app.keys import DISPATCH_STEP, NOTIFICATIONS_SEND
from app.outbox import INSERT_JOB
from scripts.bench.harness import BenchError, say
from scripts.bench.measure import load_average_text, percentiles, print_table, verdict
from scripts.bench.processes import WorkerProcess
from scripts.bench.session import BenchSession, run_on_stack

TARGET_P50_MS = 5.0
REGION = "BNCH"
POLL_S = 0.001
START_TIMEOUT_S = 10.0

_USER = """INSERT INTO users (id, email, password_hash, full_name, phone, role, is_active, whatsapp_opt_in,
                              token_generation, created_at, updated_at)
           VALUES (%s, %s, 'x', 'Bench', '+4917012345678', 'customer', true, false, 0, now(), now())"""

_RIDE = """WITH ride AS (
    INSERT INTO rides (id, customer_id, region_code, vehicle_type, payment_method, pickup_lat, pickup_lng,
                       dropoff_lat, dropoff_lng, distance_km, status, created_at, updated_at)
    VALUES (%(ride)s, %(user)s, 'BNCH', 'van', 'cash', 52.52, 13.40, 52.50, 13.45, 3.0, 'PENDING_BIDS',
            now(), now())
    RETURNING id)
""" + INSERT_JOB + """
SELECT gen_random_uuid(), """ + DISPATCH_STEP.sql + """, jsonb_build_array(CAST(id AS text), 0), '{}', '{}',
       now(), now() FROM ride"""
_RIDE_STARTED = "SELECT extract(epoch FROM updated_at) FROM rides WHERE id = %s AND dispatch_round = 0"

_NOTE = """WITH note AS (
    INSERT INTO notifications (id, user_id, template, dedupe_key, params, channel, recipient, body, status,
                               attempts, created_at, updated_at)
    VALUES (%(note)s, %(user)s, 'payment_failed', %(key)s, '{}', 'console', '+4917012345678', 'bench',
            'queued', 0, now(), now())
    RETURNING id)
""" + INSERT_JOB + """
SELECT gen_random_uuid(), """ + NOTIFICATIONS_SEND.sql + """, jsonb_build_array(CAST(id AS text)), '{}',
       '{}', now(), now() FROM note"""
_NOTE_STARTED = ("SELECT extract(epoch FROM updated_at) FROM notifications"
                 " WHERE id = %s AND status <> 'queued'")

_JOB = """INSERT INTO jobs (message_id, queue, actor, args, kwargs, options, created_at, due_at)
VALUES (%(message)s, 'maintenance', 'sessions.end_sockets',
        jsonb_build_array(CAST(%(user)s AS text), 'bench'), '{}', '{}', now(), now())"""
_JOB_STARTED = "SELECT extract(epoch FROM finished_at) FROM jobs WHERE message_id = %s AND state = 'done'"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs of each kind (default 200)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="jobs per second, one at a time (default 10)")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rate <= 0:
        parser.error("--jobs and --rate must be positive")
    return args


def one(conn: psycopg.Connection[Any], write: str, params: dict[str, Any], started: str, key: Any,
        worker: WorkerProcess) -> float:
    """Commit one job, wait for its start stamp; ms from the commit's return to the start."""
    with conn.transaction():
        conn.execute(write, params)
    committed = time.time()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        row = conn.execute(started, (key,)).fetchone()
        if row is not None:
            return (float(row[0]) - committed) * 1000
        if time.monotonic() > deadline:
            worker.check_alive()
            raise BenchError(f"a job did not start within {START_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def measure(conn: psycopg.Connection[Any], kind: str, user: uuid.UUID, args: argparse.Namespace,
            worker: WorkerProcess) -> list[float]:
    latencies = []
    next_at = time.monotonic()
    for _ in range(args.jobs):
        next_at += 1 / args.rate
        if kind == "dispatch":
            ride = uuid.uuid4()
            latencies.append(one(conn, _RIDE, {"ride": ride, "user": user}, _RIDE_STARTED, ride, worker))
        elif kind == "notification":
            note = uuid.uuid4()
            latencies.append(one(conn, _NOTE, {"note": note, "user": user, "key": f"bench:{note}"},
                                 _NOTE_STARTED, note, worker))
        else:
            message = uuid.uuid4()
            latencies.append(one(conn, _JOB, {"message": message, "user": user}, _JOB_STARTED, message,
                                 worker))
        time.sleep(max(0.0, next_at - time.monotonic()))
    return latencies


def measure_all(args: argparse.Namespace, session: BenchSession) -> tuple[str, dict[str, dict[str, float]]]:
    """The load average before, and percentiles of commit → start for each kind of job (after a
    warm-up of three of each)."""
    results: dict[str, dict[str, float]] = {}
    load = load_average_text()
    session.stack.add_region(REGION)
    user = uuid.uuid4()
    conn = session.postgres()
    conn.execute(_USER, (user, f"{user}@bench.example"))
    worker = session.start_worker()
    say("warming up (the worker imports, connects and takes its first jobs)")
    for kind in ("dispatch", "notification", "dramatiq"):
        measure(conn, kind, user, argparse.Namespace(jobs=3, rate=args.rate), worker)
    for kind in ("dispatch", "notification", "dramatiq"):
        say(f"{kind}: {args.jobs} jobs, {args.rate:g} a second")
        results[kind] = percentiles(measure(conn, kind, user, args, worker))
    worker.stop()
    return load, results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure_all(args, session))
    if measured is None:
        return 2
    load, results = measured

    names = {"dispatch": "dispatch round (dispatcher)", "notification": "notification (sender)",
             "dramatiq": "Dramatiq job (relay+consumer)"}
    rows = []
    for kind, figures in results.items():
        rows.append((f"{names[kind]} p50", f"{figures['p50']:.2f} ms", f"<= {TARGET_P50_MS:g} ms",
                     verdict(figures["p50"] <= TARGET_P50_MS)))
        tail = f"{figures['p95']:.1f} / {figures['p99']:.1f} / {figures['max']:.1f}"
        rows.append(("  p95 / p99 / max (ms)", tail, "", ""))
    print_table(f"Commit → job start, one job at a time at {args.rate:g}/s, one worker process "
                f"(python -m workers.run); load average before: {load}", rows, width=34)
    missed = any(f["p50"] > TARGET_P50_MS for f in results.values())
    return 3 if args.fail_under_target and missed else 0


if __name__ == "__main__":
    sys.exit(main())
