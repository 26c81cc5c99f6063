"""Benchmark: time-slot holds (`POST /api/v1/bookings`) on one web process, and the conflict rate
under 64 concurrent clients.

    .venv/bin/python scripts/bench/bench_holds.py [--duration 10] [--connections 64] [--providers 50]

Starts the Procfile's `web` line on a private database and Redis prefix, publishes the providers'
weeks (every day, 15-minute slots, in UTC), and runs wrk twice on loopback:

- **spread**: each hold picks one of the providers and one slot of the next 30 days at random, as
  a busy marketplace does (conflicts are the slots already taken);
- **contended**: every client wants one of a provider's 16 slots (a sale, a popular evening): almost
  every request is a conflict, and PostgreSQL's exclusion constraint must still let exactly one
  hold per slot through.

It prints holds/s (won), requests/s, the conflict rate and latency, then checks in PostgreSQL that
no two live bookings of a provider overlap and that every won hold is a row. Exits 1 if the run had
errors (an answer other than 201/409, or an overlap), 2 if it could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from scripts.bench.generators import run_wrk_json
from scripts.bench.harness import BenchError, register_user, say
from scripts.bench.measure import print_table, split_cpus
from scripts.bench.profiling import start_profiler, wait_for_profile
from scripts.bench.session import BenchSession, run_on_stack

SCRIPT = Path(__file__).resolve().with_name("holds.lua")
SLOT_S = 900
SLOTS_PER_DAY = 95  # 00:00-23:45 in 15-minute slots inside 00:00-23:59
WARM_UP_S = 2
CUSTOMERS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="wrk against POST /api/v1/bookings (holds)")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per phase (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument(
        "--providers", type=int, default=50, help="providers in the spread phase (default 50)"
    )
    parser.add_argument("--no-pin", action="store_true", help="let the OS place wrk and the web process")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="also sample the web process with py-spy during the spread phase (.svg, .txt, "
        ".json); py-spy takes CPU too, so figures from such a run are lower",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.providers) < 1:
        parser.error("--duration, --connections and --providers must be positive")
    return args


@dataclass
class Phase:
    name: str
    result: dict[str, Any]

    @property
    def seconds(self) -> float:
        return float(self.result["duration_us"]) / 1e6

    def rate(self, key: str) -> float:
        return float(self.result[key]) / self.seconds if self.seconds else 0.0

    @property
    def conflict_rate(self) -> float:
        answered = self.result["won"] + self.result["refused"]
        return self.result["refused"] / answered if answered else 0.0

    def latency_ms(self, point: str) -> float:
        return float(self.result["latency_us"][point]) / 1000


@dataclass
class Measured:
    phases: list[Phase]
    rows: int
    overlaps: int
    rss_mb: float
    #: Requests that may have been in flight when a phase's wrk stopped counting.
    in_flight: int

    @property
    def failed(self) -> bool:
        won = sum(p.result["won"] for p in self.phases)
        errors = sum(
            p.result["other"] + sum(v for k, v in p.result["errors"].items() if k != "status")
            for p in self.phases
        )
        # wrk stops counting at the deadline: holds in flight then commit uncounted (one per connection)
        return bool(errors or self.overlaps or not won <= self.rows <= won + self.in_flight or won == 0)


def publish_providers(base_url: str, count: int) -> list[str]:
    week = [{"weekday": day, "start": "00:00", "end": "23:59"} for day in range(7)]
    providers = []
    for _ in range(count):
        provider_id, token = register_user(base_url, "driver", vehicle_type="van")
        response = httpx.put(
            f"{base_url}/api/v1/providers/me/schedule",
            timeout=10.0,
            headers={"Authorization": f"Bearer {token}"},
            json={
                "region": "BNC",
                "timeZone": "UTC",
                "price": {"amount": 2500, "currency": "EUR"},
                "slotMinutes": SLOT_S // 60,
                "weeklyHours": week,
            },
        )
        if response.status_code != 200:
            raise BenchError(f"publishing a schedule answered {response.status_code}: {response.text[:300]}")
        providers.append(provider_id)
    return providers


def run_phase(
    session: BenchSession,
    url: str,
    name: str,
    env: dict[str, str],
    args: argparse.Namespace,
    cpus: set[int] | None,
) -> Phase:
    say(f"{name}: measuring for {args.duration} s")
    result = run_wrk_json(
        session.wrk,
        url,
        SCRIPT,
        duration_s=args.duration,
        connections=args.connections,
        threads=1,
        env=env,
        cpus=cpus,
    )
    return Phase(name, result)


def measure(args: argparse.Namespace, session: BenchSession) -> Measured:
    web_cpus, wrk_cpus = split_cpus(args.no_pin)
    db = session.postgres()
    db.execute(
        "INSERT INTO regions (code, name, currency, commission_rate, updated_at) "
        "VALUES ('BNC', 'Bench', 'EUR', 0.15, now()) ON CONFLICT DO NOTHING"
    )
    web = session.start_web(
        {
            "ACCESS_TOKEN_TTL": "7200",
            "AUTH_RATE_LIMIT_REQUESTS": "100000",
            "BOOKINGS_HOLDS_PER_CUSTOMER": "0",
        },
        cpus=web_cpus,
    )
    providers = publish_providers(web.base_url, args.providers + 1)
    tokens = [register_user(web.base_url, "customer")[1] for _ in range(CUSTOMERS)]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    common = {"BENCH_TOKENS": ",".join(tokens), "BENCH_SLOT_S": str(SLOT_S)}
    spread = {
        **common,
        "BENCH_PROVIDERS": ",".join(providers[1:]),
        "BENCH_BASE": str(int(tomorrow.timestamp())),
        "BENCH_DAYS": "30",
        "BENCH_SLOTS": str(SLOTS_PER_DAY),
    }
    hot = {
        **common,
        "BENCH_PROVIDERS": providers[0],
        "BENCH_BASE": str(int(tomorrow.timestamp()) + 18 * 3600),
        "BENCH_DAYS": "1",
        "BENCH_SLOTS": "16",
    }
    url = f"{web.base_url}/api/v1/bookings"
    say(f"warming up for {WARM_UP_S} s")
    run_wrk_json(
        session.wrk,
        url,
        SCRIPT,
        duration_s=WARM_UP_S,
        connections=args.connections,
        threads=1,
        env={**spread, "BENCH_BASE": str(int(tomorrow.timestamp()) + 40 * 86400)},
        cpus=wrk_cpus,
    )
    warm_rows = db.execute("SELECT count(*) FROM bookings").fetchone()[0]  # type: ignore[index]
    py_spy = session.py_spy
    profiler = start_profiler(py_spy, web.pid, args.duration, args.profile) if py_spy else None
    phases = [
        run_phase(session, url, "spread", spread, args, wrk_cpus),
        run_phase(session, url, "contended", hot, args, wrk_cpus),
    ]
    if profiler is not None and not wait_for_profile(profiler, args.profile):
        raise BenchError("py-spy did not write the profile")
    rows = db.execute("SELECT count(*) FROM bookings").fetchone()[0] - warm_rows  # type: ignore[index]
    overlaps = db.execute(
        "SELECT count(*) FROM bookings a JOIN bookings b ON a.provider_id = b.provider_id"
        " AND a.id < b.id AND a.blocked && b.blocked"
        " WHERE a.status IN ('HELD', 'CONFIRMED') AND b.status IN ('HELD', 'CONFIRMED')"
    ).fetchone()[0]  # type: ignore[index]
    if web.popen.poll() is not None:
        raise BenchError(f"web exited {web.popen.returncode} during the run:\n{web.output()[-3000:]}")
    measured = Measured(phases, int(rows), int(overlaps), web.rss_mb(), args.connections * len(phases))
    session.keep_logs = measured.failed
    return measured


def report(args: argparse.Namespace, measured: Measured) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for phase in measured.phases:
        rows += [
            (f"{phase.name}: holds won/s", f"{phase.rate('won'):,.0f}", "", ""),
            (f"{phase.name}: requests/s", f"{phase.rate('requests'):,.0f}", "", ""),
            (f"{phase.name}: conflict rate", f"{phase.conflict_rate * 100:.1f} %", "", ""),
            (f"{phase.name}: latency p50", f"{phase.latency_ms('p50'):.2f} ms", "", ""),
            (f"{phase.name}: latency p99", f"{phase.latency_ms('p99'):.2f} ms", "", ""),
            (
                f"{phase.name}: other answers",
                str(phase.result["other"]),
                "0",
                "ok" if not phase.result["other"] else "MISSED",
            ),
        ]
    rows += [
        (
            "overlapping live bookings",
            str(measured.overlaps),
            "0",
            "ok" if not measured.overlaps else "MISSED",
        ),
        ("rows written (won + in flight)", str(measured.rows), "", "ok" if not measured.failed else "MISSED"),
        ("web RSS", f"{measured.rss_mb:.0f} MB", "", ""),
    ]
    load = os.getloadavg()
    title = (
        f"POST /api/v1/bookings (cash holds)  ·  {args.connections} connections  ·  "
        f"{args.duration} s per phase  ·  one web process"
    )
    notes = [
        f"spread: {args.providers} providers x 30 days x {SLOTS_PER_DAY} slots; "
        "contended: 1 provider x 16 slots",
        f"machine: {os.cpu_count()} CPUs, load average after the run {load[0]:.2f} (wrk shares the cores)",
    ]
    print_table(title, rows, notes, width=30, measured_width=14, target_width=6)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), wrk=True, py_spy=bool(args.profile))
    if measured is None:
        return 2
    report(args, measured)
    if measured.failed:
        print("\nFAILED: the run had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
