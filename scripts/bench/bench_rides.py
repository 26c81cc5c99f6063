"""Benchmark: `POST /api/v1/rides` (customer JWT + validation + ride, history and outbox rows).

    .venv/bin/python scripts/bench/bench_rides.py [--duration 10] [--connections 64] [--rate 1000]
    .venv/bin/python scripts/bench/bench_rides.py --drivers 100000   # the worker's steps find drivers

One web process from the Procfile's `web` line, on a private database, Redis prefix and Dramatiq
namespace, driven from loopback (web pinned to CPU 0, the load generator to CPU 1):

1. with a worker running as the Procfile runs it (outbox relay + `dispatch.step` for every ride;
   no drivers are indexed, so each step finds nobody — `--drivers N` seeds N online drivers over a
   40 x 40 km box around the pickup, so each step searches and offers as in `bench_dispatch.py`):
   latency at a fixed rate (`loadgen.py`, latency from each request's scheduled time), then the
   maximum throughput (wrk, `rides.lua`);
2. the same without the worker (`--skip-no-worker` to leave out);
3. where the request's time goes on Redis: the web app wrapped by `probe_web.py` (Redis calls timed
   per request), with the outbox and with a variant that enqueues through the actor's `send()`
   in the handler — a measurement only (`--skip-send-variant` to leave out).

Exits 1 if a run had errors, 2 if it could not run, 3 with `--fail-under-target` when a target
was missed.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import psycopg

from scripts.bench.driver_seed import FRESH_ENV, seed_online_drivers
from scripts.bench.generators import (
    PacedResult,
    WrkResult,
    add_load_options,
    check_load_options,
    run_paced,
    run_wrk,
)
from scripts.bench.harness import BenchError, record_result, register_user, say
from scripts.bench.measure import CpuMeter, fmt_ms, load_average_text, print_table, split_cpus, verdict
from scripts.bench.processes import WebProcess, WorkerProcess, wait_until
from scripts.bench.profiling import start_profiler, wait_for_profile
from scripts.bench.ride_request import PICKUP, REGION, VEHICLE, ride_body
from scripts.bench.session import BenchSession, run_on_stack

SCRIPT = Path(__file__).resolve().with_name("rides.lua")
TARGET_RPS = 3_000
TARGET_P99_MS = 50.0
WARM_UP_S = 2
#: Waiting for the worker to dispatch the check ride (its first job includes importing everything).
WORKER_READY_S = 45.0


@dataclass
class Phase:
    """One measured run and what the processes did meanwhile."""

    label: str
    kind: str  # "paced" or "wrk"
    worker: bool
    wrk: WrkResult | None = None
    paced: PacedResult | None = None
    web_cpu_pct: float = 0.0
    worker_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    dispatched_per_s: float = 0.0
    undispatched_after: int = 0
    outbox_after: int = 0
    load: str = ""
    #: Run against `probe_web.py`: the Redis totals it answered for the measured run.
    probe: bool = False
    redis: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> WrkResult | PacedResult:
        found = self.wrk or self.paced
        assert found is not None
        return found

    @property
    def errors(self) -> int:
        if self.wrk is not None:
            return self.wrk.socket_errors + self.wrk.non_2xx
        assert self.paced is not None
        return self.paced.errors + self.paced.non_2xx

    @property
    def unanswered(self) -> int:
        """Paced requests still unanswered when the generator stopped waiting (an overload, not an error)."""
        return self.paced.unanswered if self.paced is not None else 0

    @property
    def rate(self) -> float:
        return self.result.rate

    def latency(self, point: str) -> float:
        return self.result.latency(point)


class RideCounts:
    """Rides stored / dispatched (a round started) and first rounds not run yet."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def read(self) -> tuple[int, int, int]:
        total, dispatched = self._conn.execute("SELECT count(*), count(dispatch_round) FROM rides").fetchone()  # type: ignore[misc]
        outbox = self._conn.execute(  # dispatch jobs not run yet (done rows stay in the ledger a while)
            "SELECT count(*) FROM jobs WHERE actor = 'dispatch.step' AND state IN ('waiting', 'handed')"
        ).fetchone()[0]  # type: ignore[index]
        return int(total), int(dispatched), int(outbox)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="POST /api/v1/rides: max throughput and paced latency")
    add_load_options(parser, "rides")
    parser.add_argument("--drivers", type=int, default=0,
                        help="online drivers seeded over a 40 km box around the pickup, so the worker's "
                             "steps search and offer (default 0: every step finds nobody)")
    parser.add_argument("--skip-no-worker", action="store_true", help="only the runs with a worker")
    parser.add_argument("--skip-send-variant", action="store_true",
                        help="leave out the Redis-share runs (probe_web.py, outbox vs send())")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place every process")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="py-spy the web process during the web-only wrk run (.svg, .txt or .json)")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if args.drivers < 0:
        parser.error("--drivers must not be negative")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, session: BenchSession) -> None:
        self.args = args
        self.session = session
        self.web_cpus, self.client_cpus = split_cpus(args.no_pin)
        self.body = ride_body()
        self.counts = RideCounts(session.postgres())
        self.fresh_env = FRESH_ENV if args.drivers else {}
        self.web_env = {"ACCESS_TOKEN_TTL": "7200", "AUTH_RATE_LIMIT_REQUESTS": "1000", **self.fresh_env}
        self.token = ""

    # --- processes
    def start_web(self, asgi_app: str | None = None, enqueue: str = "outbox") -> WebProcess:
        web = self.session.start_web({**self.web_env, "BENCH_ENQUEUE": enqueue}, cpus=self.web_cpus,
                                     asgi_app=asgi_app)
        if not self.token:
            _, self.token = register_user(web.base_url, "customer")
        self.check_ride(web)
        return web

    def check_ride(self, web: WebProcess) -> None:
        response = httpx.post(f"{web.base_url}/api/v1/rides", content=self.body, timeout=10.0,
                              headers={"Authorization": f"Bearer {self.token}",
                                       "Content-Type": "application/json"})
        if response.status_code != 201:
            raise BenchError(f"POST /api/v1/rides answered {response.status_code}: {response.text[:500]}")

    def start_worker(self) -> WorkerProcess:
        worker = self.session.start_worker(self.fresh_env)

        def dispatched_all() -> bool:
            total, dispatched, outbox = self.counts.read()
            return dispatched == total and outbox == 0

        if not wait_until(dispatched_all, timeout_s=WORKER_READY_S, process=worker, poll_s=0.2):
            raise BenchError(f"the worker did not dispatch the waiting rides in {WORKER_READY_S:.0f} s")
        say(f"worker dispatched the {self.counts.read()[0]} ride(s) waiting; measuring")
        return worker

    # --- runs
    def run_load(self, phase: Phase, url: str, duration_s: int) -> None:
        """wrk (`duration_s`) or the paced generator (after its warm-up) against `url`."""
        if phase.kind == "wrk":
            phase.wrk = run_wrk(self.session.wrk, url, SCRIPT, duration_s=duration_s,
                                connections=self.args.connections, threads=self.args.threads,
                                env={"BENCH_TOKEN": self.token, "BENCH_BODY": self.body.decode()},
                                cpus=self.client_cpus)
        else:
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            phase.paced = run_paced(url, rate=self.args.rate, duration_s=duration_s,
                                    connections=self.args.paced_connections, method="POST",
                                    headers=headers, body=self.body, warmup_s=WARM_UP_S,
                                    cpus=self.client_cpus)

    def measure(self, phase: Phase, web: WebProcess, worker: WorkerProcess | None) -> Phase:
        url = f"{web.base_url}/api/v1/rides"
        say(f"{phase.label}: {phase.kind}, {self.args.duration} s after a {WARM_UP_S} s warm-up")
        if phase.kind == "wrk":
            self.run_load(Phase("warm-up", "wrk", phase.worker), url, WARM_UP_S)
        if phase.probe:
            httpx.post(f"{web.base_url}/__bench__/redis", timeout=5.0)
        phase.load = load_average_text()
        _, dispatched_before, _ = self.counts.read()
        meter = CpuMeter({"web": web, **({"worker": worker} if worker else {})})
        meter.start()
        profiler = None
        if phase.kind == "wrk" and self.args.profile and worker is None and not phase.probe:
            assert self.session.py_spy is not None
            profiler = start_profiler(self.session.py_spy, web.pid, self.args.duration, self.args.profile)
        self.run_load(phase, url, self.args.duration)
        # wrk's own window; the paced generator's warm-up and start-up ran inside the wall-clock one
        meter.stop(phase.wrk.duration_s if phase.wrk is not None else None)
        if profiler is not None:
            wait_for_profile(profiler, self.args.profile)
        phase.machine_busy_pct, phase.web_cpu_pct = meter.machine_busy, meter.percent["web"]
        phase.worker_cpu_pct = meter.percent.get("worker", 0.0)
        total, dispatched, outbox = self.counts.read()
        phase.dispatched_per_s = (dispatched - dispatched_before) / meter.elapsed_s
        phase.undispatched_after, phase.outbox_after = total - dispatched, outbox
        if phase.probe:
            phase.redis = httpx.get(f"{web.base_url}/__bench__/redis", timeout=5.0).json()
        web.check_alive()
        if worker is not None:
            worker.check_alive()
        return phase

    def farm_runs(self) -> list[Phase]:
        phases: list[Phase] = []
        web = self.start_web()
        worker = self.start_worker()
        for kind in ("paced", "wrk"):
            phases.append(self.measure(Phase("outbox · worker", kind, True), web, worker))
        say("stopping the worker (a backlog of undispatched rides stays behind)")
        worker.stop()
        if not self.args.skip_no_worker:
            for kind in ("paced", "wrk"):
                phases.append(self.measure(Phase("outbox · no worker", kind, False), web, None))
        web.stop(keep_log=any(p.errors for p in phases))
        return phases

    def redis_runs(self) -> list[Phase]:
        phases: list[Phase] = []
        for enqueue, label, kinds in (("outbox", "probe · outbox · no worker", ("wrk",)),
                                      ("send", "probe · send() · no worker", ("wrk", "paced"))):
            web = self.start_web("scripts.bench.probe_web:app", enqueue)
            for kind in kinds:
                phases.append(self.measure(Phase(label, kind, False, probe=True), web, None))
            web.stop(keep_log=any(p.errors for p in phases))
        return phases


def report(args: argparse.Namespace, phases: list[Phase], load_before: str) -> None:
    print(f"\nPOST /api/v1/rides  ·  one web process (Procfile web line)  ·  {args.duration} s per run after "
          f"a {WARM_UP_S} s warm-up  ·  wrk {args.connections} connections; paced {args.rate:g}/s over "
          f"{args.paced_connections} connections")
    print(f"machine: {os.cpu_count()} CPUs, load average before the runs {load_before}; web pinned to "
          f"CPU 0, load generator to CPU 1 (unless --no-pin); worker, PostgreSQL and Redis unpinned")
    print(f"{args.drivers:,} online drivers indexed over a 40 x 40 km box around the pickup (the worker's "
          f"steps search and offer)" if args.drivers else
          "no drivers indexed: the worker's steps find nobody (--drivers N to seed them)")
    print("latency: wrk = from send; paced = from each request's scheduled send time (coordinated-omission "
          "corrected)\n")
    header = (f"{'run':34}{'kind':>6}{'rides/s':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'errors':>8}"
              f"{'unans.':>8}"
              f"{'web CPU':>9}{'wkr CPU':>9}{'box':>6}{'steps/s':>9}{'backlog':>9}{'load':>8}")
    print(header)
    for p in phases:
        print(f"{p.label:34}{p.kind:>6}{p.rate:>9,.0f}{fmt_ms(p.latency('p50')):>8}{fmt_ms(p.latency('p90')):>8}"
              f"{fmt_ms(p.latency('p99')):>8}{fmt_ms(p.latency('max')):>8}{p.errors:>8}{p.unanswered:>8}"
              f"{p.web_cpu_pct:>8.0f}%{(f'{p.worker_cpu_pct:.0f}%' if p.worker else '-'):>9}"
              f"{p.machine_busy_pct:>5.0f}%{(f'{p.dispatched_per_s:,.0f}' if p.worker else '-'):>9}"
              f"{p.undispatched_after:>9,}{p.load.split(' / ')[0]:>8}")
    print("(latencies in ms; rides/s: wrk = answered per second, paced = sent / (first due to last "
          "answer); unans. = paced requests not answered 20 s after the last was due; CPU = % of one core; "
          "box = all CPUs busy; steps/s = rides the worker dispatched per second during the run; backlog = "
          "rides not yet dispatched after it)")

    with_worker = {p.kind: p for p in phases if p.label == "outbox · worker"}
    rows = []
    if "wrk" in with_worker:
        rps = with_worker["wrk"].rate
        rows.append(("max rides/s, worker on", f"{rps:,.0f}", f">= {TARGET_RPS:,}",
                     verdict(rps >= TARGET_RPS)))
    if "paced" in with_worker:
        paced = with_worker["paced"]
        p99 = paced.latency("p99")
        rows.append((f"p99 at {args.rate:g}/s, worker on", f"{p99:.1f} ms", f"<= {TARGET_P99_MS:g} ms",
                     verdict(p99 <= TARGET_P99_MS)))
        rows.append(("  rate reached", f"{paced.rate:,.0f}/s", "", ""))
    print_table("Targets", rows)
    report_probes([p for p in phases if p.probe and p.redis])


def report_probes(probes: list[Phase]) -> None:
    """The runs against `probe_web.py`: Redis calls and time per request, and per command."""
    if probes:
        print("\nRedis on the request path (probe_web.py: Redis calls timed inside each request; "
              "awaited = redis.asyncio, blocking = sync client on the event loop)\n")
        print(f"{'run':30}{'kind':>6}{'rides/s':>9}{'p99':>8}{'awaited/req':>13}{'blocking/req':>14}"
              f"{'Redis ms/req':>14}{'share of req':>14}{'loop blocked':>14}")
        for p in probes:
            r = p.redis
            n = max(1, r["requests"])
            redis_s = r["awaited_s"] + r["blocking_s"]
            share = redis_s / r["request_s"] * 100 if r["request_s"] else 0.0
            blocked = r["blocking_s"] / r["window_s"] * 100 if r["window_s"] else 0.0
            print(f"{p.label:30}{p.kind:>6}{p.rate:>9,.0f}{fmt_ms(p.latency('p99')):>8}"
                  f"{r['awaited_calls'] / n:>13.2f}{r['blocking_calls'] / n:>14.2f}"
                  f"{redis_s / n * 1000:>14.3f}{share:>13.1f}%{blocked:>13.1f}%")
        print("(share of req = Redis time / in-process request time, summed over requests; loop blocked = "
              "blocking Redis time / wall time: the share of the event loop nobody else could use)")
        print("\nRedis commands inside requests, per 1,000 requests (mean ms per call):")
        for p in probes:
            n = max(1, p.redis["requests"])
            calls = sorted(p.redis["commands"].items(), key=lambda item: -item[1][0])
            listed = ", ".join(f"{name} {count / n * 1000:,.1f} ({spent / count * 1000:.2f} ms)"
                               for name, (count, spent) in calls) or "none"
            print(f"  {p.label} ({p.kind}): {listed}")


def measure(args: argparse.Namespace, session: BenchSession) -> tuple[str, list[Phase]]:
    """The load average before, and every run: with the worker, without it, then the Redis probes."""
    load_before = load_average_text()
    stack = session.stack
    stack.add_region(REGION)
    if args.drivers:
        say(f"seeding {args.drivers:,} online drivers (PostgreSQL COPY + GEO index)")
        seed_online_drivers(stack.libpq_dsn, stack.settings(**FRESH_ENV), args.drivers,
                            vehicle_type=VEHICLE, center=PICKUP)
    bench = Bench(args, session)
    phases = bench.farm_runs()
    if not args.skip_send_variant:
        phases += bench.redis_runs()
    return load_before, phases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), wrk=True, py_spy=bool(args.profile))
    if measured is None:
        return 2
    load_before, phases = measured
    report(args, phases, load_before)
    record_result("rides", {
        "duration_s": args.duration, "connections": args.connections, "rate": args.rate,
        "drivers": args.drivers,
        "phases": [{**asdict(p), "rate": p.rate, "errors": p.errors, "unanswered": p.unanswered,
                    "p50_ms": p.latency("p50"), "p99_ms": p.latency("p99")} for p in phases],
    })
    if any(p.errors for p in phases):
        print("\nFAILED: a run had errors", file=sys.stderr)
        return 1
    with_worker = {p.kind: p for p in phases if p.label == "outbox · worker"}
    missed = with_worker["wrk"].rate < TARGET_RPS or with_worker["paced"].latency("p99") > TARGET_P99_MS
    if args.fail_under_target and missed:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
