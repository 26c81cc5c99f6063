"""Benchmark: authenticated `GET /api/v1/me` (JWT verify + one Redis round trip) on one web process.

    .venv/bin/python scripts/bench/bench_me.py [--duration 10] [--connections 64] [--threads 2]

Starts the Procfile's `web` line on a private database and Redis prefix, registers a customer,
warms up, runs wrk on loopback and prints requests/s and latency percentiles beside the target.
Exits 1 if the run had errors (socket errors or non-2xx/3xx answers), 2 if it could not run,
3 with `--fail-under-target` when a target was missed.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from scripts.bench.generators import WrkResult, run_wrk
from scripts.bench.harness import BenchError, register_user, say
from scripts.bench.measure import print_table, split_cpus, verdict
from scripts.bench.profiling import start_profiler, wait_for_profile
from scripts.bench.session import BenchSession, run_on_stack

SCRIPT = Path(__file__).resolve().with_name("me.lua")
TARGET_RPS = 5_000
TARGET_P99_MS = 30.0
WARM_UP_S = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="wrk against authenticated GET /api/v1/me")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="open connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let the OS place wrk and the web process (default: web on CPU 0, wrk on "
                             "the others, so the load generator does not preempt the server)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="also sample the web process with py-spy during the measured run "
                             "(.svg flame graph, .txt collapsed stacks, .json speedscope); "
                             "py-spy takes CPU too, so figures from such a run are lower")
    parser.add_argument("--fail-under-target", action="store_true",
                        help="exit 3 when requests/s or p99 misses the target")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections and --threads must be positive")
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
    return args


def sign_up(base_url: str) -> str:
    """Register a customer and check its token answers 200 on `/me`; returns the access token."""
    user_id, token = register_user(base_url, "customer")
    me = httpx.get(f"{base_url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    if me.status_code != 200 or me.json().get("id") != user_id:
        raise BenchError(f"GET /me answered {me.status_code}: {me.text[:300]}")
    return token


def report(args: argparse.Namespace, result: WrkResult, cpu_s: float, rss_mb: float,
           load: tuple[float, float, float]) -> None:
    rows = [
        ("requests/s", f"{result.rps:,.0f}", f">= {TARGET_RPS:,}", verdict(result.rps >= TARGET_RPS)),
        ("latency p50", f"{result.p50_ms:.2f} ms", "", ""),
        ("latency p90", f"{result.p90_ms:.2f} ms", "", ""),
        ("latency p99", f"{result.p99_ms:.2f} ms", f"<= {TARGET_P99_MS:g} ms",
         verdict(result.p99_ms <= TARGET_P99_MS)),
        ("latency max", f"{result.max_ms:.2f} ms", "", ""),
        ("requests", f"{result.requests:,}", "", ""),
        ("socket errors", str(result.socket_errors),
         "(connect {connect}, read {read}, write {write}, timeout {timeout})".format(**result.errors), ""),
        ("non-2xx/3xx", str(result.non_2xx), "", ""),
        ("web CPU", f"{cpu_s / result.duration_s * 100:.0f} % of one core", "", ""),
        ("web RSS", f"{rss_mb:.0f} MB", "", ""),
    ]
    title = (f"GET /api/v1/me  ·  {args.connections} connections  ·  {args.threads} wrk threads  ·  "
             f"{result.duration_s:.1f} s after a {WARM_UP_S} s warm-up  ·  one web process")
    machine = (f"machine: {os.cpu_count()} CPUs, load average before the run "
               f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (wrk shares the cores)")
    print_table(title, rows, [machine], width=16, measured_width=18, target_width=14)


@dataclass
class Measured:
    result: WrkResult
    cpu_s: float
    rss_mb: float
    load: tuple[float, float, float]

    @property
    def failed(self) -> bool:
        return bool(self.result.socket_errors or self.result.non_2xx or self.result.requests == 0)


def measure(args: argparse.Namespace, session: BenchSession) -> Measured:
    web_cpus, wrk_cpus = split_cpus(args.no_pin)
    web = session.start_web({"ACCESS_TOKEN_TTL": str(max(900, args.duration + WARM_UP_S + 300))},
                            cpus=web_cpus)
    token = sign_up(web.base_url)
    url = f"{web.base_url}/api/v1/me"
    wrk_env = {"BENCH_TOKEN": token}
    say(f"warming up for {WARM_UP_S} s")
    run_wrk(session.wrk, url, SCRIPT, duration_s=WARM_UP_S, connections=args.connections,
            threads=args.threads, env=wrk_env, cpus=wrk_cpus)
    load = os.getloadavg()
    say(f"measuring for {args.duration} s")
    py_spy = session.py_spy
    profiler = start_profiler(py_spy, web.pid, args.duration, args.profile) if py_spy else None
    cpu_before = web.cpu_seconds()
    result = run_wrk(session.wrk, url, SCRIPT, duration_s=args.duration, connections=args.connections,
                     threads=args.threads, env=wrk_env, cpus=wrk_cpus)
    cpu_s = web.cpu_seconds() - cpu_before
    if profiler is not None and not wait_for_profile(profiler, args.profile):
        raise BenchError("py-spy did not write the profile")
    measured = Measured(result, cpu_s, web.rss_mb(), load)
    if web.popen.poll() is not None:
        raise BenchError(f"web exited {web.popen.returncode} during the run:\n{web.output()[-3000:]}")
    session.keep_logs = measured.failed
    return measured


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), wrk=True, py_spy=bool(args.profile))
    if measured is None:
        return 2
    result = measured.result
    report(args, result, measured.cpu_s, measured.rss_mb, measured.load)
    if measured.failed:
        print("\nFAILED: the run had errors", file=sys.stderr)
        return 1
    if args.fail_under_target and (result.rps < TARGET_RPS or result.p99_ms > TARGET_P99_MS):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
