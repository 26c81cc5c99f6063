"""Benchmark: `notifications.send` throughput of ONE worker process against the Twilio fake.

    .venv/bin/python scripts/bench/bench_notifications.py                 # the default plan below
    .venv/bin/python scripts/bench/bench_notifications.py --plan 0:8 --plan 100:64 --messages 10000
    .venv/bin/python scripts/bench/bench_notifications.py --profile /tmp/notify.svg --plan 0:8

On a private database, Redis prefix and Dramatiq namespace:

1. starts the Twilio fake in a process of its own (`scripts/bench/twilio_fake.py`: HTTP/1.1
   keep-alive, optional latency per answer, as Twilio's API takes ~100-300 ms);
2. seeds 1,000 customers with E.164 phones;
3. for each run of the plan (`LATENCY_MS:THREADS[:PROCESSES]`): writes `--messages` queued SMS
   notifications and one `notifications.send` ledger row per notification (as `notify()` does),
   starts ONE worker as the Procfile does (`python -m workers.run`, WORKER_PROCESSES=1 —
   or PROCESSES, shown for comparison and not counted for the target —, NOTIFY_SEND_CONCURRENCY,
   WORKER_THREADS and WORKER_QUEUE_PREFETCH = THREADS, Twilio pointed at the fake,
   LOG_LEVEL=WARNING) and times the
   drain from the rows' `sent_at` (first to last, and over the middle 80 %), for at most
   `--max-seconds`; then stops the worker and empties the queues.

The worker's sender thread takes the rows in batches of NOTIFY_BATCH_SIZE: one claim statement,
the real twilio SDK's `messages.create` over HTTP to the fake on THREADS threads, one statement
recording the batch. `--worker-env NOTIFY_BATCHED=0` measures the one-Dramatiq-message-per-send
path instead (claim, send, record and Dramatiq's fetch and ack for each).

Exits 1 if a message failed, 2 if it could not run, 3 with `--fail-under-target` when the best
run missed the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg
import redis

from app.keys import QUEUE_NOTIFICATIONS
from scripts.bench.harness import BenchError, add_settings_option, parse_settings, record_result, say
from scripts.bench.measure import CpuMeter, RedisCpu, load_average_text, print_table, stamp_rates, verdict
from scripts.bench.processes import FarmProcess, busiest, wait_until
from scripts.bench.profiling import start_profiler, stop_profiler
from scripts.bench.session import BenchSession, run_on_stack

TARGET_PER_S = 500
CUSTOMERS = 1_000
SMS_FROM = "+15557654321"
CALLBACK = "https://farm.example.test/webhooks/twilio/status"
DEFAULT_PLAN = ("0:8", "0:32", "100:8", "100:64", "100:128", "0:8:2")
POLL_S = 0.25


@dataclass(frozen=True)
class Run:
    latency_ms: int
    threads: int
    processes: int = 1

    @property
    def label(self) -> str:
        extra = f" x {self.processes} proc." if self.processes > 1 else ""
        return f"{self.latency_ms} ms, {self.threads} threads{extra}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="notifications.send throughput of one worker process")
    parser.add_argument("--plan", action="append", metavar="LATENCY_MS:THREADS[:PROCESSES]",
                        help=f"a run: the fake's latency per answer, the worker's threads and (for "
                             f"comparison, not the target) processes (repeatable; "
                             f"default {' '.join(DEFAULT_PLAN)})")
    parser.add_argument("--messages", type=int, default=6_000, help="notifications per run (default 6000)")
    parser.add_argument("--max-seconds", type=float, default=25.0,
                        help="stop timing a run after this long (a slow run reports what it sent)")
    add_settings_option(parser, "--worker-env",
                        help="another setting for the worker, e.g. LOG_LEVEL=INFO (repeatable)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="sample the worker with py-spy --gil during the last run (.svg, .txt, .json)")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.runs = [Run(*(int(part) for part in item.split(":"))) for item in (args.plan or DEFAULT_PLAN)]
    except (TypeError, ValueError):
        parser.error("--plan takes LATENCY_MS:THREADS[:PROCESSES], e.g. 100:64")
    args.worker_env = parse_settings(parser, "--worker-env", args.worker_env)
    if args.messages < 10 or args.max_seconds <= 0:
        parser.error("--messages must be at least 10 and --max-seconds positive")
    return args


# --- the fake ------------------------------------------------------------------------------------------
@dataclass
class Fake:
    process: FarmProcess
    base_url: str
    account_sid: str
    auth_token: str


def start_fake(session: BenchSession, latency_ms: int) -> Fake:
    argv = [sys.executable, "-m", "scripts.bench.twilio_fake", "--latency-ms", str(latency_ms)]
    process = session.adopt(FarmProcess.launch("twilio-fake", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}))
    started: list[dict[str, str]] = []

    def announced() -> bool:
        started.extend(json.loads(line.removeprefix("TWILIO_FAKE "))
                       for line in process.output().splitlines() if line.startswith("TWILIO_FAKE "))
        return bool(started)

    if not wait_until(announced, timeout_s=20, process=process):
        process.stop()
        raise BenchError("the Twilio fake did not start in 20 s")
    info = started[0]
    return Fake(process, info["base_url"], info["account_sid"], info["auth_token"])


# --- seeding ---------------------------------------------------------------------------------------
def seed_customers(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("""
            INSERT INTO users (id, email, password_hash, full_name, phone, role, whatsapp_opt_in, is_active,
                               token_generation, created_at, updated_at)
            SELECT gen_random_uuid(), 'bench-' || g || '@example.com', '!', 'Customer ' || g,
                   '+1555' || lpad(g::text, 7, '0'), 'customer', false, true, 0, now(), now()
            FROM generate_series(1, %s) g""", (CUSTOMERS,))
        conn.commit()


def seed_notifications(dsn: str, tag: str, count: int) -> list[uuid.UUID]:
    """`count` queued SMS notifications spread over the customers, as `notify()` writes them."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("""
            WITH customer AS (SELECT id, phone, row_number() OVER (ORDER BY id) - 1 AS n FROM users)
            INSERT INTO notifications (id, user_id, template, dedupe_key, params, channel, recipient, body,
                                       status, attempts, created_at, updated_at)
            SELECT gen_random_uuid(), c.id, 'booking_confirmed', %(tag)s || ':' || g, '{}'::jsonb, 'sms',
                   c.phone, 'Dispatch Farm: ride ' || upper(substr(md5(g::text), 1, 8))
                   || ' is booked (van from Alexanderplatz 1). We are asking drivers nearby; '
                   || 'you will hear when bids come in.',
                   'queued', 0, now(), now()
            FROM generate_series(1, %(count)s) g JOIN customer c ON c.n = g %% %(customers)s
            RETURNING id""", {"tag": tag, "count": count, "customers": CUSTOMERS}).fetchall()
        conn.commit()
    return [row[0] for row in rows]


def enqueue_sends(dsn: str, ids: list[uuid.UUID]) -> None:
    """One `notifications.send` ledger row per notification, as `notify()` writes it: the worker's
    sender thread sends them in batches (with `--worker-env NOTIFY_BATCHED=0`, its relay hands each
    to Redis as one Dramatiq message instead)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (message_id, queue, actor, args, kwargs, options, created_at, due_at) "
            "SELECT gen_random_uuid(), %s, 'notifications.send', jsonb_build_array(CAST(n AS text)), "
            "'{}', '{}', now(), now() FROM unnest(CAST(%s AS uuid[])) AS n",
            (QUEUE_NOTIFICATIONS, ids))


# --- one run ---------------------------------------------------------------------------------------------
@dataclass
class Drain:
    run: Run
    sent: int = 0
    failed: int = 0
    wall_s: float = 0.0
    rate: float = 0.0
    rate_middle: float = 0.0
    worker_cpu_pct: float = 0.0
    fake_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    scripts_per_msg: float = 0.0
    timed_out: bool = False


def redis_script_calls(client: redis.Redis) -> int:
    """Lua script calls Redis has run (Dramatiq's fetch, ack, enqueue; the whole server's)."""
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def counts(conn: psycopg.Connection[Any], tag: str) -> tuple[int, int]:
    row = conn.execute("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = "
                       "'failed') FROM notifications WHERE dedupe_key LIKE %s", (tag + ":%",)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def send_rates(conn: psycopg.Connection[Any], tag: str) -> tuple[float, float]:
    return stamp_rates([float(r[0]) for r in conn.execute(
        "SELECT extract(epoch FROM sent_at) FROM notifications WHERE dedupe_key LIKE %s AND sent_at IS NOT "
        "NULL ORDER BY sent_at", (tag + ":%",))])


def worker_env(args: argparse.Namespace, run: Run, fake: Fake) -> dict[str, str]:
    """The worker's settings for `run`: its threads and processes, Twilio pointed at the fake."""
    return {"WORKER_PROCESSES": str(run.processes), "WORKER_THREADS": str(run.threads),
            "NOTIFY_SEND_CONCURRENCY": str(run.threads),
            "WORKER_QUEUE_PREFETCH": str(max(run.threads, 1)),
            "TWILIO_ACCOUNT_SID": fake.account_sid, "TWILIO_AUTH_TOKEN": fake.auth_token,
            "TWILIO_SMS_FROM": SMS_FROM, "TWILIO_API_BASE": fake.base_url,
            "TWILIO_STATUS_CALLBACK_URL": CALLBACK, **args.worker_env}


def drain(args: argparse.Namespace, session: BenchSession, run: Run, number: int, fake: Fake,
          redis_client: redis.Redis, *, profile: Path | None) -> Drain:
    tag = f"bench:{number}"
    conn = session.postgres()
    ids = seed_notifications(session.stack.libpq_dsn, tag, args.messages)
    enqueue_sends(session.stack.libpq_dsn, ids)
    result = Drain(run)
    worker = session.start_worker(worker_env(args, run, fake))
    # the worker imports, boots, sends its first message
    if not wait_until(lambda: counts(conn, tag)[0] > 0, timeout_s=60, process=worker):
        raise BenchError(f"the worker sent nothing in 60 s:\n{worker.output()[-3000:]}")
    profiler = None
    if profile is not None and session.py_spy:
        profiler = start_profiler(session.py_spy, busiest(worker.pids()), int(args.max_seconds) + 5,
                                  profile, ("--gil",))
    try:
        meter = CpuMeter({"worker": worker, "fake": fake.process, "redis": RedisCpu(redis_client)})
        meter.start()
        scripts_before = redis_script_calls(redis_client)
        sent_before = counts(conn, tag)[0]
        started = time.monotonic()
        result.timed_out = not wait_until(lambda: sum(counts(conn, tag)) >= len(ids),
                                          timeout_s=args.max_seconds, process=worker, poll_s=POLL_S)
        meter.stop()
        result.wall_s = time.monotonic() - started
    finally:
        if profiler is not None and profile is not None:
            stop_profiler(profiler, profile)
    result.worker_cpu_pct, result.fake_cpu_pct = meter.percent["worker"], meter.percent["fake"]
    result.machine_busy_pct, result.redis_cpu_pct = meter.machine_busy, meter.percent["redis"]
    result.sent, result.failed = counts(conn, tag)
    result.scripts_per_msg = ((redis_script_calls(redis_client) - scripts_before)
                              / max(result.sent - sent_before, 1))
    result.rate, result.rate_middle = send_rates(conn, tag)
    worker.stop(keep_log=result.failed > 0)
    session.stack.forget_keys(f"{session.stack.env['DRAMATIQ_NAMESPACE']}:*")
    return result


# --- report -----------------------------------------------------------------------------------------
def best_single(drains: list[Drain]) -> Drain | None:
    """The fastest run with ONE worker process (what the target is about)."""
    single = [d for d in drains if d.run.processes == 1]
    return max(single, key=lambda d: d.rate) if single else None


def report(args: argparse.Namespace, drains: list[Drain], load: str) -> None:
    print(f"\nnotifications.send  ·  ONE worker process (python -m workers.run, WORKER_PROCESSES=1)  ·  "
          f"SMS through the real twilio SDK to the fake in its own process (HTTP/1.1 keep-alive)  ·  "
          f"{args.messages:,} messages per run, at most {args.max_seconds:g} s")
    print(f"machine: {os.cpu_count()} CPUs, load average before the runs {load}; processes unpinned; "
          f"WORKER_QUEUE_PREFETCH = threads")
    if args.worker_env:
        print("settings changed: " + ", ".join(f"{k}={v}" for k, v in args.worker_env.items()))
    print(f"\n{'fake latency, threads':24}{'msg/s':>8}{'mid 80%':>9}{'sent':>12}{'failed':>7}"
          f"{'worker CPU':>11}{'CPU/msg':>9}{'fake CPU':>9}{'Redis':>7}{'scripts/msg':>12}{'all CPUs':>9}")
    for d in drains:
        per_msg = d.worker_cpu_pct / 100 / max(d.rate, 1e-9) * 1000
        print(f"{d.run.label:24}{d.rate:>8,.0f}{d.rate_middle:>9,.0f}"
              f"{f'{d.sent:,}/{args.messages:,}':>12}{d.failed:>7}{d.worker_cpu_pct:>10.0f}%"
              f"{per_msg:>7.2f}ms{d.fake_cpu_pct:>8.0f}%{d.redis_cpu_pct:>6.0f}%{d.scripts_per_msg:>12.1f}"
              f"{d.machine_busy_pct:>8.0f}%")
    best = best_single(drains)
    rows = [(f"best: {best.run.label}", f"{best.rate:,.0f} msg/s", f">= {TARGET_PER_S}/s",
             verdict(best.rate >= TARGET_PER_S))] if best else []
    for d in drains:
        if d is not best:
            note = "(not one process)" if d.run.processes > 1 else ""
            rows.append((f"  {d.run.label}", f"{d.rate:,.0f} msg/s", note, ""))
    print_table("notifications.send throughput, one worker process", rows, width=30)
    print("\n(msg/s from the rows' sent_at, first to last; CPU as % of one core over the run; a run that "
          "hit --max-seconds reports what it sent.)")


def measure(args: argparse.Namespace, session: BenchSession) -> tuple[str, list[Drain]]:
    """The load average before, and one drain for each run of the plan (a fake of its own each)."""
    drains: list[Drain] = []
    redis_client = session.redis()
    load = load_average_text()
    seed_customers(session.stack.libpq_dsn)
    for number, run in enumerate(args.runs):
        fake = start_fake(session, run.latency_ms)
        say(f"run {number + 1}/{len(args.runs)}: {run.label}")
        last = number == len(args.runs) - 1
        drains.append(drain(args, session, run, number, fake, redis_client,
                            profile=args.profile if last else None))
        fake.process.stop()
    return load, drains


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), py_spy=bool(args.profile))
    if measured is None:
        return 2
    load, drains = measured
    report(args, drains, load)
    record_result("notifications", {"messages": args.messages, "runs": drains})
    if any(d.failed for d in drains):
        print("\nFAILED: notifications failed", file=sys.stderr)
        return 1
    best = best_single(drains)
    if args.fail_under_target and (best is None or best.rate < TARGET_PER_S):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
