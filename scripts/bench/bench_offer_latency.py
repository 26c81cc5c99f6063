"""Benchmark: ride created → the first driver's Socket.IO client receives `ride:offer`.

    .venv/bin/python scripts/bench/bench_offer_latency.py [--rides 2000] [--rate 200] [--drivers 5]

Starts the Procfile's `web` and `worker` lines (worker settings as configured by default, e.g.
WORKER_POLL_TIMEOUT_MS) on a private database, Redis prefix and Dramatiq namespace; registers
`--drivers` drivers through the API, reports their positions near the pickup and puts them
online; connects a real python-socketio `AsyncClient` (websocket transport) for each; then
creates `--rides` rides at `--rate` rides/s (paced, from `--customers` customers) and measures,
per ride, the time from the moment its POST was due to the first `ride:offer` for it on any
driver socket. Drivers never bid, so none goes busy.

Every ride is offered to every driver within reach, up to DISPATCH_MAX_OFFERS_PER_ROUND: each ride
means `--drivers` emits through Redis pub/sub and `--drivers` socket messages. Keep `--drivers` small
(default 5) so the socket fan-out does not dominate what is measured.

Every process is placed by the OS, as the Procfile runs them (`--pin` pins the web process to
CPU 0 and this client to CPU 1 instead: on 2 cores that starves the web process whenever
PostgreSQL or the worker lands on CPU 0, and the figures get worse, not steadier).
Exits 1 if rides failed or got no offer, 2 if it could not run, 3 with `--fail-under-target`
when the target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import psycopg
import socketio

from scripts.bench.harness import (
    BenchError,
    add_settings_option,
    parse_settings,
    record_result,
    register_user,
    say,
)
from scripts.bench.loadgen import ConnectionPool, Sample, Samples, build_request, pace
from scripts.bench.measure import CpuMeter, load_average_text, percentiles, print_table, split_cpus, verdict
from scripts.bench.ride_request import PICKUP, REGION, VEHICLE, ride_body
from scripts.bench.session import BenchSession, run_on_stack

TARGET_P95_MS = 30.0
WARM_UP_S = 2.0
#: The first ride waits for the worker to import everything and wake up.
FIRST_OFFER_TIMEOUT_S = 45.0
#: After the last ride was due, offers are awaited this long.
TAIL_S = 30.0
#: After the warm-up, its rides' offers are awaited this long (so the measured run starts unqueued).
WARM_UP_DRAIN_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ride created → first ride:offer on a driver socket")
    parser.add_argument("--rides", type=int, default=2000, help="measured rides (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="rides per second (default 200)")
    parser.add_argument("--drivers", type=int, default=5, help="online drivers near the pickup (default 5)")
    parser.add_argument("--customers", type=int, default=4, help="customers creating the rides (default 4)")
    parser.add_argument("--connections", type=int, default=64,
                        help="HTTP keep-alive connections (default 64)")
    parser.add_argument("--pin", action="store_true",
                        help="pin the web process to CPU 0 and this client to CPU 1")
    add_settings_option(parser, "--worker-env",
                        help="a setting for the worker, e.g. WORKER_POLL_TIMEOUT_MS=10 (repeatable; to see "
                             "what moves the figure; by default the worker runs as configured)")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    args.worker_env = parse_settings(parser, "--worker-env", args.worker_env)
    if min(args.rides, args.drivers, args.customers, args.connections) < 1 or args.rate <= 0:
        parser.error("--rides, --rate, --drivers, --customers and --connections must be positive")
    return args


def put_drivers_online(base_url: str, tokens: list[str]) -> None:
    """Each driver reports a position within ~800 m of the pickup and goes online."""
    rng = random.Random(7)
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=10.0) as client:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            lat = PICKUP[0] + rng.uniform(-0.005, 0.005)
            lng = PICKUP[1] + rng.uniform(-0.008, 0.008)
            for method, path, body in (("PUT", "/drivers/me/location", {"lat": lat, "lng": lng}),
                                       ("POST", "/drivers/me/online", None)):
                response = client.request(method, path, json=body, headers=headers)
                if response.status_code != 204:
                    raise BenchError(f"{method} {path} answered {response.status_code}: "
                                     f"{response.text[:300]}")


@dataclass
class OfferLog:
    """When the first `ride:offer` for each ride reached any driver socket (perf_counter)."""

    first: dict[str, float] = field(default_factory=dict)
    events: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, data: object) -> None:
        now = time.perf_counter()
        self.events += 1
        ride_id = data.get("rideId") if isinstance(data, dict) else None
        if isinstance(ride_id, str) and ride_id not in self.first:
            self.first[ride_id] = now
            self.arrived.set()

    async def wait_for(self, ride_ids: Iterable[str], timeout_s: float) -> None:
        """Until every one of these rides had an offer, or `timeout_s` passed."""
        deadline = time.perf_counter() + timeout_s
        pending = {r for r in ride_ids if r not in self.first}
        while pending and (left := deadline - time.perf_counter()) > 0:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
            pending = {r for r in pending if r not in self.first}


async def connect_drivers(base_url: str, tokens: list[str], log: OfferLog) -> list[socketio.AsyncClient]:
    clients = []
    for token in tokens:
        client = socketio.AsyncClient(reconnection=False)

        async def on_offer(data: object) -> None:
            log.record(data)

        client.on("ride:offer", on_offer)
        await client.connect(base_url, transports=["websocket"], auth={"token": token},
                             socketio_path="socket.io", wait_timeout=10)
        clients.append(client)
    return clients


@dataclass
class Run:
    samples: Samples
    ride_of: dict[int, str]
    offers: OfferLog
    wall_offset: float  # time.time() - time.perf_counter()
    duration_s: float
    client_cpu_pct: float  # this process (HTTP client + driver sockets), % of one core


async def drive(args: argparse.Namespace, base_url: str, drivers: list[str], customers: list[str],
                meter: CpuMeter) -> Run:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = ride_body()
    requests = [build_request("POST", f"{host}:{port}", "/api/v1/rides",
                              {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, body)
                for token in customers]
    log = OfferLog()
    clients = await connect_drivers(base_url, drivers, log)
    pool = ConnectionPool(host, port, args.connections)
    await pool.open()
    ride_of: dict[int, str] = {}

    def on_answer(sample: Sample, answer: bytes) -> None:
        if sample.status == 201:
            ride_of[sample.index] = json.loads(answer)["id"]

    try:
        say(f"first ride (waits for the worker to start, up to {FIRST_OFFER_TIMEOUT_S:.0f} s)")
        probe = await pace(pool, lambda i: requests[0], rate=1, count=1, on_answer=on_answer, first_index=-1)
        if probe.items[0].status != 201:
            raise BenchError(f"POST /api/v1/rides answered {probe.items[0].status}")
        try:
            await asyncio.wait_for(log.arrived.wait(), FIRST_OFFER_TIMEOUT_S)
        except TimeoutError:
            raise BenchError("no ride:offer reached a driver socket; is the worker dispatching?") from None
        say(f"warming up: {int(args.rate * WARM_UP_S)} rides at {args.rate:g}/s")
        await pace(pool, lambda i: requests[i % len(requests)], rate=args.rate,
                   count=int(args.rate * WARM_UP_S), first_index=-1_000_000)
        # Start the measured run from an empty queue: wait for the warm-up rides' offers.
        await log.wait_for(ride_of.values(), WARM_UP_DRAIN_S)
        backlog = sum(1 for r in ride_of.values() if r not in log.first)
        if backlog:
            say(f"{backlog} warm-up rides still had no offer after {WARM_UP_DRAIN_S:.0f} s; measuring anyway")
        ride_of.clear()
        await asyncio.sleep(0.5)
        say(f"measuring: {args.rides} rides at {args.rate:g}/s")
        wall_offset = time.time() - time.perf_counter()
        meter.start()
        started, client_cpu = time.perf_counter(), time.process_time()
        samples = await pace(pool, lambda i: requests[i % len(requests)], rate=args.rate, count=args.rides,
                             on_answer=on_answer)
        duration_s = time.perf_counter() - started
        client_cpu_pct = (time.process_time() - client_cpu) / duration_s * 100
        meter.stop()
        await log.wait_for(ride_of.values(), TAIL_S)
        return Run(samples, dict(ride_of), log, wall_offset, duration_s, client_cpu_pct)
    finally:
        pool.close()
        for client in clients:
            if client.connected:
                await client.disconnect()


def step_started_at(dsn: str, ride_ids: list[str]) -> dict[str, tuple[float, float]]:
    """`ride id → (created_at, updated_at)` as epoch seconds: stamped by the web at create and by the
    worker when `dispatch.step` claimed round 0 (nothing else touches the ride during the run)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id::text, extract(epoch FROM created_at), extract(epoch FROM updated_at) FROM rides "
            "WHERE dispatch_round = 0 AND id = ANY(%s::uuid[])", (ride_ids,)).fetchall()
    return {ride_id: (float(created), float(updated)) for ride_id, created, updated in rows}


@dataclass
class Segments:
    """Per answered ride, ms: due → first offer, the POST's latency and service time, and the offer's
    way through the farm from the database stamps (`missing`: rides that got no offer)."""

    offer: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    to_row: list[float] = field(default_factory=list)
    to_step: list[float] = field(default_factory=list)
    to_socket: list[float] = field(default_factory=list)
    missing: int = 0


def segments(run: Run, stamps: dict[str, tuple[float, float]]) -> Segments:
    found = Segments()
    for sample in {s.index: s for s in run.samples.items if s.status == 201}.values():
        ride_id = run.ride_of.get(sample.index)
        arrived = run.offers.first.get(ride_id or "")
        found.post.append((sample.done - sample.scheduled) * 1000)
        found.service.append((sample.done - sample.sent) * 1000)
        if arrived is None:
            found.missing += 1
            continue
        found.offer.append((arrived - sample.scheduled) * 1000)
        if ride_id in stamps:
            created, step = stamps[ride_id]
            due_wall, offer_wall = sample.scheduled + run.wall_offset, arrived + run.wall_offset
            found.to_row.append((created - due_wall) * 1000)
            found.to_step.append((step - created) * 1000)
            found.to_socket.append((offer_wall - step) * 1000)
    return found


def report(args: argparse.Namespace, run: Run, stamps: dict[str, tuple[float, float]], load: str,
           cpu: dict[str, float]) -> tuple[dict[str, float], int]:
    seg = segments(run, stamps)
    offer_ms, missing = seg.offer, seg.missing
    failed = len(run.samples.items) - len(seg.post)
    offers = percentiles(offer_ms)

    print(f"\nride created → first ride:offer  ·  {args.rides} rides at {args.rate:g}/s (paced, from "
          f"{args.customers} customers over {args.connections} connections)  ·  "
          f"{args.drivers} online drivers "
          f"within ~1 km, one socket each  ·  web + worker from the Procfile")
    print(f"machine: {os.cpu_count()} CPUs, load average before the run {load}; "
          f"{'web pinned to CPU 0, this client to CPU 1' if args.pin else 'processes placed by the OS'}; "
          f"worker, PostgreSQL and Redis unpinned")
    if args.worker_env:
        print("worker settings changed for this run: "
              + ", ".join(f"{k}={v}" for k, v in args.worker_env.items()))
    print(f"each ride is offered to all {args.drivers} drivers (DISPATCH_MAX_OFFERS_PER_ROUND caps it): "
          f"{run.offers.events:,} ride:offer events received in all; latency is from the moment each POST "
          f"was due to the first offer for that ride on any driver socket")

    rows = [
        ("offer p50", f"{offers.get('p50', float('nan')):.1f} ms", "", ""),
        ("offer p90", f"{offers.get('p90', float('nan')):.1f} ms", "", ""),
        ("offer p95", f"{offers.get('p95', float('nan')):.1f} ms", f"<= {TARGET_P95_MS:g} ms",
         verdict(offers.get("p95", float("inf")) <= TARGET_P95_MS)),
        ("offer p99", f"{offers.get('p99', float('nan')):.1f} ms", "", ""),
        ("offer max", f"{offers.get('max', float('nan')):.1f} ms", "", ""),
        ("rides with an offer", f"{len(offer_ms):,} / {len(run.samples.items):,}", "all", verdict(
            missing == 0 and failed == 0)),
        ("POST failed / no offer", f"{failed} / {missing}", "", ""),
        ("rate reached", f"{len(run.samples.items) / run.duration_s:,.0f} rides/s", "", ""),
        ("web / worker CPU", f"{cpu['web']:.0f} % / {cpu['worker']:.0f} %", "", ""),
        ("client CPU (this process)", f"{run.client_cpu_pct:.0f} %", "", ""),
        ("all CPUs busy", f"{cpu['box']:.0f} %", "", ""),
        ("web / worker RSS", f"{cpu['web_rss']:.0f} / {cpu['worker_rss']:.0f} MB", "", ""),
    ]
    print_table("Targets", rows)
    print_segments(seg)
    return offers, missing + failed


def print_segments(seg: Segments) -> None:
    print(f"\nWhere the time goes (per ride; database stamps, same clock; {len(seg.to_step):,} rides)\n")
    print(f"{'segment':52}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}")
    for name, values in (
        ("POST due → answered (client view)", seg.post),
        ("POST sent → answered (server + network)", seg.service),
        ("due → ride row stamped (HTTP, auth, validation)", seg.to_row),
        ("row stamped → step started (commit, relay, queue)", seg.to_step),
        ("step started → offer on socket (step, emit, ws)", seg.to_socket),
    ):
        p = percentiles(values)
        print(f"{name:52}{p.get('p50', 0):>8.1f}{p.get('p95', 0):>8.1f}{p.get('p99', 0):>8.1f}"
              f"{p.get('max', 0):>9.1f}")
    print("(ms; the middle segment holds the outbox commit + NOTIFY, the relay's enqueue and the time "
          "the message waits for a Dramatiq consumer)")


@dataclass
class Measured:
    run: Run
    stamps: dict[str, tuple[float, float]]
    load_before: str
    cpu: dict[str, float]


def measure(args: argparse.Namespace, session: BenchSession) -> Measured:
    session.stack.add_region(REGION)
    web_cpus, client_cpus = split_cpus(not args.pin)
    web = session.start_web({"ACCESS_TOKEN_TTL": "3600", "AUTH_RATE_LIMIT_REQUESTS": "1000"})
    worker = session.start_worker(args.worker_env)
    say(f"registering {args.customers} customers and {args.drivers} drivers")
    customers = [register_user(web.base_url, "customer")[1] for _ in range(args.customers)]
    drivers = [register_user(web.base_url, "driver", vehicle_type=VEHICLE)[1]
               for _ in range(args.drivers)]
    put_drivers_online(web.base_url, drivers)
    if web_cpus:
        web.pin(web_cpus)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    meter = CpuMeter({"web": web, "worker": worker})
    load_before = load_average_text()
    run = asyncio.run(drive(args, web.base_url, drivers, customers, meter))
    cpu = {"web": meter.percent["web"], "worker": meter.percent["worker"], "box": meter.machine_busy,
           "web_rss": web.rss_mb(), "worker_rss": worker.rss_mb()}
    web.check_alive()
    worker.check_alive()
    return Measured(run, step_started_at(session.stack.libpq_dsn, list(run.ride_of.values())),
                    load_before, cpu)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session))
    if measured is None:
        return 2
    cpu = measured.cpu
    offers, problems = report(args, measured.run, measured.stamps, measured.load_before, cpu)
    record_result("offer_latency", {"rate": args.rate, "rides": args.rides, "drivers": args.drivers,
                                    "offer_ms": offers, "problems": problems, **cpu})
    if problems:
        print("\nFAILED: rides failed or got no offer", file=sys.stderr)
        return 1
    if args.fail_under_target and offers.get("p95", float("inf")) > TARGET_P95_MS:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
