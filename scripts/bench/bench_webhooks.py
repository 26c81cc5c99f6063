"""Benchmark: `POST /webhooks/stripe` (verify the signature, store the event once, outbox row, 200).

    .venv/bin/python scripts/bench/bench_webhooks.py [--duration 10] [--connections 64] [--rate 1000]

One web process from the Procfile's `web` line (STRIPE_SECRET_KEY=sk_test_bench,
STRIPE_WEBHOOK_SECRET=whsec_bench) on a private database, Redis prefix and Dramatiq namespace, driven
from loopback (web pinned to CPU 0, the load generator to CPU 1). wrk's Lua cannot compute an HMAC,
so every event is generated and signed here beforehand (realistic `payment_intent.succeeded`,
`charge.refunded` and `account.updated` bodies of ~1.5-2 KB, each with its own `evt_` id, signed
with the current time) into a file the load generator reads:

1. latency at a fixed rate (default 1,000 events/s for 10 s after 2 s of warm-up) with
   `webhooks_paced.py` (`loadgen.py`'s generator, one new event per request);
2. maximum throughput with wrk and `webhooks.lua`, every request a new event;
3. the duplicate path: the events of run 2 delivered again (re-signed, as Stripe signs each
   delivery): 200 `duplicate: true`, nothing stored (`--skip-duplicate` to leave out);
4. a bad signature (signed with another secret): 400, nothing stored (`--skip-bad-signature`).

Afterwards PostgreSQL is asked, per run, which event ids it stored and how many
`payments.handle_event` outbox rows each has: every event sent must be stored exactly once with
exactly one outbox row, and the number stored must equal the 200 `duplicate: false` answers (plus
the requests wrk had in flight when it stopped, which it never reads the answers of).

No worker runs by default: the outbox rows just accumulate. `--with-worker` starts the Procfile's
`worker` line too (the relay then moves the rows to Redis and `payments.handle_event` runs for
each; its `charge.refunded` / `account.updated` handling calls Stripe, pointed here at a closed
loopback port, so those jobs fail and retry — load that production would not have).

Exits 1 if a run had errors or a check failed, 2 if it could not run, 3 with `--fail-under-target`
when a target was missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from scripts.bench.generators import (
    PacedResult,
    WrkResult,
    add_load_options,
    check_load_options,
    run_generator,
    run_wrk_json,
)
from scripts.bench.harness import BenchError, add_settings_option, parse_settings, say
from scripts.bench.measure import (
    CpuMeter,
    MachineCpu,
    fmt_ms,
    load_average_text,
    postgres_cpu,
    postgres_cpu_since,
    print_table,
    split_cpus,
    verdict,
)
from scripts.bench.processes import WebProcess, WorkerProcess, free_port, wait_until
from scripts.bench.profiling import start_profiler, wait_for_profile
from scripts.bench.session import BenchSession, run_on_stack
from scripts.bench.stripe_events import SECRET, EventFile, EventMaker, new_events, resign, sign
from scripts.bench.webhook_runs import Phase, check_stored

LUA = Path(__file__).resolve().with_name("webhooks.lua")
PACED = Path(__file__).resolve().with_name("webhooks_paced.py")
PATH = "/webhooks/stripe"
TARGET_RPS = 1_000
TARGET_P99_MS = 50.0
WARM_UP_S = 2
WEB_ENV = {"STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_WEBHOOK_SECRET": SECRET}
#: Sizing the wrk warm-up's events (it must not run out: its rate sizes the measured run's file).
WARM_UP_MAX_RATE = 6_000
#: The measured wrk run gets this many times the warm-up's rate x duration events (and at least the target's).
HEADROOM = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="POST /webhooks/stripe: max throughput and paced latency")
    add_load_options(parser, "events")
    parser.add_argument("--skip-paced", action="store_true", help="leave out the paced run")
    parser.add_argument("--skip-duplicate", action="store_true", help="leave out the replayed-events run")
    parser.add_argument("--skip-bad-signature", action="store_true", help="leave out the 400 run")
    parser.add_argument("--with-worker", action="store_true",
                        help="also run the Procfile's worker line (relay + payments.handle_event; its "
                             "Stripe calls go to a closed port and fail)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="py-spy the web process during the wrk run of new events (.svg, .txt, .json)")
    add_settings_option(parser, "--web-env",
                        help="a setting for the web process (repeatable), e.g. DB_POOL_SIZE=20")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place every process")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    args.web_settings = parse_settings(parser, "--web-env", args.web_env)
    check_load_options(parser, args)
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, session: BenchSession) -> None:
        self.args = args
        self.session = session
        self.web_cpus, self.client_cpus = split_cpus(args.no_pin)
        self.maker = EventMaker(int.from_bytes(os.urandom(4), "big"))
        self.conn = session.postgres()
        self.files: list[EventFile] = []
        session.on_close(self.remove_files)
        self.phases: list[Phase] = []

    # --- processes
    def start_web(self) -> WebProcess:
        web = self.session.start_web({**WEB_ENV, **self.args.web_settings}, cpus=self.web_cpus)
        self.check_route(web)
        return web

    def start_worker(self) -> WorkerProcess:
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: Stripe calls fail at once
        worker = self.session.start_worker({**WEB_ENV, "STRIPE_API_BASE": closed,
                                            "STRIPE_MAX_NETWORK_RETRIES": "0", "STRIPE_REQUEST_TIMEOUT": "2"})

        def relayed() -> bool:
            return self.conn.execute("SELECT count(*) FROM jobs WHERE state = 'waiting'").fetchone() == (0,)

        if not wait_until(relayed, timeout_s=45, process=worker, poll_s=0.2):
            raise BenchError("the worker did not relay the outbox rows in 45 s")
        say("the worker relayed the waiting outbox rows; measuring")
        return worker

    def check_route(self, web: WebProcess) -> None:
        """One new event (200, stored), the same again (200, duplicate), a bad signature (400)."""
        events = self.track(new_events(self.maker, "c", 1))
        signature, _, body = events.path.read_text().rstrip("\n").partition("\t")
        url = f"{web.base_url}{PATH}"
        phase = Phase("check", "http", "new", tag="c", sent_ids={events.ids[0]}, requests_sent=2)
        with httpx.Client(timeout=10.0) as client:
            for header, expect in ((signature, (200, False)), (signature, (200, True)),
                                   (sign(body, "whsec_wrong"), (400, None))):
                response = client.post(url, content=body.encode(), headers={
                    "Stripe-Signature": header, "Content-Type": "application/json"})
                duplicate = response.json().get("duplicate") if response.status_code == 200 else None
                if (response.status_code, duplicate) != expect:
                    raise BenchError(f"POST {PATH} answered {response.status_code} {response.text[:300]} "
                                     f"(expected {expect})")
        phase.answers = {"new": 1, "duplicate": 1}
        self.phases.append(phase)

    def track(self, events: EventFile) -> EventFile:
        self.files.append(events)
        return events

    # --- runs
    def run_wrk(self, web: WebProcess, events: EventFile,
                duration_s: int) -> tuple[WrkResult, dict[str, Any]]:
        extra = run_wrk_json(self.session.wrk, f"{web.base_url}{PATH}", LUA, duration_s=duration_s,
                             connections=self.args.connections, threads=self.args.threads,
                             env={"BENCH_EVENTS": str(events.path), "BENCH_THREADS": str(self.args.threads)},
                             cpus=self.client_cpus)
        return WrkResult.from_json(extra), extra

    def sent_by_wrk(self, events: EventFile, extra: dict[str, Any]) -> tuple[set[str], int]:
        """Ids wrk sent (thread k took lines k, k+n, …, in order) and how often a slice ran out."""
        threads = extra["threads"]
        sent: set[str] = set()
        for k, thread in enumerate(threads):
            mine = events.ids[k::len(threads)]
            sent.update(mine[:thread["sent"]])
        return sent, sum(int(t["wrapped"]) for t in threads)

    def load(self, phase: Phase, web: WebProcess, events: EventFile, duration_s: int) -> None:
        """Send `events` with wrk or the paced generator; what was sent and answered, into `phase`."""
        if phase.kind == "wrk":
            phase.wrk, extra = self.run_wrk(web, events, duration_s)
            phase.answers = {k: int(v) for k, v in extra["answers"].items() if v}
            phase.sent_ids, phase.wrapped = self.sent_by_wrk(events, extra)
            phase.requests_sent = sum(int(t["sent"]) for t in extra["threads"])
        else:
            phase.paced, extra = self.run_paced(web, events)
            phase.answers = {("bad_request" if k == "400" else k): int(v)
                             for k, v in extra["answers"].items()}
            unwritten = {int(i) for i in extra["unwritten"]}
            phase.sent_ids = {event_id for i, event_id in enumerate(events.ids[:int(extra["events_sent"])])
                              if i not in unwritten}
            phase.requests_sent = len(phase.sent_ids)

    def measure(self, phase: Phase, web: WebProcess, worker: WorkerProcess | None,
                events: EventFile, *, duration_s: int | None = None, profile: bool = False) -> Phase:
        duration = duration_s or self.args.duration
        say(f"{phase.label}: {phase.kind}, {duration} s, {len(events.ids):,} events "
            f"(~{events.mean_bytes:,.0f} bytes each)")
        phase.load = load_average_text()
        meter = CpuMeter({"web": web, **({"worker": worker} if worker else {})})
        pg_cpu = postgres_cpu()
        meter.start()
        profiler = None
        if profile and self.session.py_spy and self.args.profile is not None:
            profiler = start_profiler(self.session.py_spy, web.pid, duration, self.args.profile)
        self.load(phase, web, events, duration)
        # wrk's own window; the paced generator's start-up and warm-up ran inside the wall-clock one
        meter.stop(phase.wrk.duration_s if phase.wrk is not None else None)
        phase.machine_busy_pct = meter.machine_busy
        phase.web_cpu_s, phase.web_cpu_pct = meter.seconds["web"], meter.percent["web"]
        phase.pg_cpu_pct = postgres_cpu_since(pg_cpu) / meter.elapsed_s * 100
        if worker is not None:
            phase.worker_cpu_pct = meter.percent["worker"]
            worker.check_alive()
        if profiler is not None and self.args.profile is not None:
            wait_for_profile(profiler, self.args.profile)
        web.check_alive()
        self.phases.append(phase)
        return phase

    def run_paced(self, web: WebProcess, events: EventFile) -> tuple[PacedResult, dict[str, Any]]:
        argv = [sys.executable, str(PACED), "--url", f"{web.base_url}{PATH}", "--events", str(events.path),
                "--rate", str(self.args.rate), "--duration", str(self.args.duration),
                "--warmup", str(WARM_UP_S), "--connections", str(self.args.paced_connections)]
        extra = run_generator(argv, timeout_s=WARM_UP_S + self.args.duration + 120, cpus=self.client_cpus)
        return PacedResult.from_json(extra), extra

    def runs(self) -> None:
        web = self.start_web()
        worker = self.start_worker() if self.args.with_worker else None
        if not self.args.skip_paced:
            count = int(self.args.rate * (WARM_UP_S + self.args.duration))
            self.measure(Phase(f"new events · paced {self.args.rate:g}/s", "paced", "new", tag="p"),
                         web, worker, self.track(new_events(self.maker, "p", count)))
        warm = self.measure(Phase("warm-up", "wrk", "new", tag="w"), web, worker,
                            self.track(new_events(self.maker, "w", WARM_UP_MAX_RATE * WARM_UP_S)),
                            duration_s=WARM_UP_S)
        count = int(max(warm.rate, TARGET_RPS) * HEADROOM * self.args.duration)
        unique = self.track(new_events(self.maker, "u", count))
        phase = self.measure(Phase("new events · wrk", "wrk", "new", tag="u"), web, worker, unique,
                             profile=True)
        if not self.args.skip_duplicate:
            replay = self.track(resign(unique, phase.sent_ids))
            self.measure(Phase("replayed (duplicates) · wrk", "wrk", "duplicate", tag="u"),
                         web, worker, replay)
        if not self.args.skip_bad_signature:
            bad = self.track(new_events(self.maker, "b", 5_000, secret="whsec_wrong"))
            self.measure(Phase("bad signature · wrk", "wrk", "400", tag="b"), web, worker, bad)
        if worker is not None:
            worker.stop()
        time.sleep(0.5)  # requests wrk left in flight finish
        web.stop(keep_log=any(p.errors for p in self.phases))

    def check(self) -> None:
        """What PostgreSQL stored for each run (`check_stored`), the total as a last phase."""
        self.phases.append(check_stored(self.conn, self.maker, self.phases,
                                        outbox_kept=not self.args.with_worker))

    def remove_files(self) -> None:
        for events in self.files:
            events.remove()


def report(args: argparse.Namespace, phases: list[Phase], load_before: str, event_bytes: float) -> None:
    print(f"\nPOST {PATH}  ·  one web process (Procfile web line)  ·  {args.duration} s per run  ·  "
          f"wrk {args.connections} connections, {args.threads} thread(s); paced {args.rate:g}/s over "
          f"{args.paced_connections} connections after a {WARM_UP_S} s warm-up  ·  "
          f"events ~{event_bytes:,.0f} bytes, each run's ids unique")
    print(f"machine: {os.cpu_count()} CPUs, load average before the runs {load_before}; web pinned to "
          f"CPU 0, load generator to CPU 1 (unless --no-pin); PostgreSQL and Redis unpinned; "
          f"{'worker running' if args.with_worker else 'no worker (outbox rows accumulate)'}"
          + (f"; web env {' '.join(args.web_env)}" if args.web_env else ""))
    print("latency: wrk = from send; paced = from each request's scheduled send time (coordinated-omission "
          "corrected)\n")
    worker = args.with_worker
    print(f"{'run':32}{'kind':>6}{'req/s':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'non-2xx':>9}"
          f"{'errors':>8}{'unans.':>8}{'web CPU':>9}{'µs/req':>8}{'pg CPU':>8}"
          + (f"{'wkr CPU':>9}" if worker else "") + f"{'box':>6}{'load':>7}")
    for p in phases:
        if p.kind in ("http", "sum"):
            continue
        print(f"{p.label:32}{p.kind:>6}{p.rate:>8,.0f}{fmt_ms(p.latency('p50')):>8}{fmt_ms(p.latency('p90')):>8}"
              f"{fmt_ms(p.latency('p99')):>8}{fmt_ms(p.latency('max')):>8}{p.non_2xx:>9,}{p.errors:>8}"
              f"{(p.paced.unanswered if p.paced else 0):>8,}"
              f"{p.web_cpu_pct:>8.0f}%{p.web_cpu_per_request_us:>8.0f}{p.pg_cpu_pct:>7.0f}%"
              + (f"{p.worker_cpu_pct:>8.0f}%" if worker else "")
              + f"{p.machine_busy_pct:>5.0f}%{p.load.split(' / ')[0]:>7}")
    print("(latencies in ms; non-2xx: the bad-signature run expects 400 for every request; errors = socket "
          "errors and answers other than the run expects; unans. = paced requests not answered 20 s after "
          "the last was due; CPU = % of one core; µs/req = web CPU per answered request; "
          "pg CPU = every postgres process; box = all CPUs busy)")

    print("\nChecks (PostgreSQL after the runs: each event stored once, "
          "one payments.handle_event outbox row)")
    for p in phases:
        if p.check:
            print(f"  {p.label:30} {verdict(p.check_ok):7} {p.check}")
    wrapped = [p.label for p in phases if p.wrapped and p.expect == "new"]
    if wrapped:
        print(f"  note: wrk ran out of new events in {', '.join(wrapped)} (repeats answered as duplicates)")

    by_label = {p.label: p for p in phases}
    rows = []
    if "new events · wrk" in by_label:
        rps = by_label["new events · wrk"].rate
        rows.append(("max events/s (wrk)", f"{rps:,.0f}", f">= {TARGET_RPS:,}", verdict(rps >= TARGET_RPS)))
    paced = next((p for p in phases if p.kind == "paced"), None)
    if paced is not None and paced.paced is not None:
        p99 = paced.latency("p99")
        rows.append((f"p99 at {args.rate:g}/s (paced)", f"{p99:.1f} ms", f"<= {TARGET_P99_MS:g} ms",
                     verdict(p99 <= TARGET_P99_MS)))
        rows.append(("  rate reached", f"{paced.rate:,.0f}/s", f">= {args.rate * 0.98:,.0f}/s",
                     verdict(paced.rate >= args.rate * 0.98 and paced.paced.unanswered == 0)))
    print_table("Targets (issue 4: >= 1,000 events/s with p99 <= 50 ms, one web process)", rows)


def missed(args: argparse.Namespace, phases: list[Phase]) -> bool:
    by_label = {p.label: p for p in phases}
    wrk = by_label.get("new events · wrk")
    paced = next((p for p in phases if p.kind == "paced"), None)
    return bool((wrk and wrk.rate < TARGET_RPS)
                or (paced and (paced.latency("p99") > TARGET_P99_MS or paced.rate < args.rate * 0.98)))


def measure(args: argparse.Namespace, session: BenchSession) -> tuple[str, Bench]:
    """The machine before (load average, how busy over a second), and the bench after its runs and
    checks."""
    idle = MachineCpu()
    time.sleep(1.0)
    load_before = f"{load_average_text()}, {idle.busy_percent():.0f} % busy over the last second"
    bench = Bench(args, session)
    bench.runs()
    bench.check()
    return load_before, bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session), wrk=True, py_spy=args.profile is not None)
    if measured is None:
        return 2
    load_before, bench = measured
    phases = bench.phases
    sizes = [f.mean_bytes for f in bench.files if len(f.ids) > 1]
    report(args, phases, load_before, sum(sizes) / len(sizes) if sizes else 0.0)
    if any(p.errors for p in phases) or not all(p.check_ok for p in phases):
        print("\nFAILED: a run had errors or a check failed", file=sys.stderr)
        return 1
    if args.fail_under_target and missed(args, phases):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
