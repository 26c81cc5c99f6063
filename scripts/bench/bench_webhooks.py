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
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import psycopg
import stripe

from scripts.bench.harness import (
    BenchError,
    BenchStack,
    PacedResult,
    WebProcess,
    WorkerProcess,
    WrkResult,
    ensure_wrk,
    find_py_spy,
    free_port,
    say,
    start_profiler,
)
from scripts.bench.measure import MachineCpu, load_average_text, print_table, split_cpus, verdict

LUA = Path(__file__).resolve().with_name("webhooks.lua")
PACED = Path(__file__).resolve().with_name("webhooks_paced.py")
PATH = "/webhooks/stripe"
TARGET_RPS = 1_000
TARGET_P99_MS = 50.0
WARM_UP_S = 2
SECRET = "whsec_bench"
WEB_ENV = {"LOG_LEVEL": "WARNING", "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_WEBHOOK_SECRET": SECRET}
#: Sizing the wrk warm-up's events (it must not run out: its rate sizes the measured run's file).
WARM_UP_MAX_RATE = 6_000
#: The measured wrk run gets this many times the warm-up's rate x duration events (and at least the target's).
HEADROOM = 2.0

# --- events ---------------------------------------------------------------------------------------
_ALNUM = string.ascii_letters + string.digits


class EventMaker:
    """Unique, realistic Stripe events (API 2024-06-20 shapes) with ids `evt_1B<tag><index>…`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.run_id = "".join(self.rng.choices(_ALNUM, k=4))

    def token(self, prefix: str, k: int = 24) -> str:
        return prefix + "".join(self.rng.choices(_ALNUM, k=k))

    def prefix(self, tag: str) -> str:
        """Every id of a run's events starts with this (one letter `tag` per run)."""
        return f"evt_1B{self.run_id}{tag}"

    def event_id(self, tag: str, index: int) -> str:
        return f"{self.prefix(tag)}{index:08d}{self.token('', 10)}"

    def body(self, event_id: str, index: int, now: int) -> dict[str, Any]:
        kind = ("payment_intent.succeeded", "payment_intent.succeeded", "charge.refunded",
                "payment_intent.succeeded", "account.updated")[index % 5]
        envelope: dict[str, Any] = {"id": event_id, "object": "event", "api_version": "2024-06-20",
                                    "created": now - self.rng.randint(0, 5)}
        if kind == "account.updated":
            account = self.token("acct_1", 15)
            envelope["account"] = account
            envelope["data"] = {"object": self.account(account, now),
                                "previous_attributes": {"charges_enabled": False, "payouts_enabled": False}}
        elif kind == "charge.refunded":
            envelope["data"] = {"object": self.charge(now),
                                "previous_attributes": {"amount_refunded": 0, "refunded": False}}
        else:
            envelope["data"] = {"object": self.intent(now)}
        envelope.update({"livemode": False, "pending_webhooks": 1,
                         "request": {"id": self.token("req_", 14), "idempotency_key": str(uuid.uuid4())},
                         "type": kind})
        return envelope

    def intent(self, now: int) -> dict[str, Any]:
        pi = self.token("pi_3")
        amount = self.rng.randint(800, 9_000)
        return {
            "id": pi, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_details": {"tip": {}}, "amount_received": amount, "application": None,
            "application_fee_amount": amount * 15 // 100, "automatic_payment_methods": None,
            "canceled_at": None, "cancellation_reason": None, "capture_method": "manual",
            "client_secret": f"{pi}_secret_{self.token('', 25)}", "confirmation_method": "automatic",
            "created": now - 900, "currency": "eur", "customer": self.token("cus_", 14),
            "description": "Ride", "invoice": None, "last_payment_error": None,
            "latest_charge": self.token("ch_3"), "livemode": False,
            "metadata": {"ride_id": str(uuid.uuid4())}, "next_action": None, "on_behalf_of": None,
            "payment_method": self.token("pm_1"), "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                                "network": None, "request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"], "processing": None, "receipt_email": None, "review": None,
            "setup_future_usage": None, "shipping": None, "source": None, "statement_descriptor": None,
            "statement_descriptor_suffix": None, "status": "succeeded",
            "transfer_data": {"destination": self.token("acct_1", 15)}, "transfer_group": f"group_{pi}",
        }

    def charge(self, now: int) -> dict[str, Any]:
        amount = self.rng.randint(800, 9_000)
        return {
            "id": self.token("ch_3"), "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": amount, "application_fee": self.token("fee_1"),
            "application_fee_amount": amount * 15 // 100,
            "balance_transaction": self.token("txn_3"),
            "billing_details": {"address": {"city": None, "country": "DE", "line1": None, "line2": None,
                                            "postal_code": None, "state": None},
                                "email": None, "name": None, "phone": None},
            "captured": True, "created": now - 3_600, "currency": "eur", "customer": self.token("cus_", 14),
            "description": "Ride", "disputed": False, "failure_code": None, "failure_message": None,
            "livemode": False, "metadata": {"ride_id": str(uuid.uuid4())},
            "outcome": {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                        "risk_score": self.rng.randint(0, 60), "seller_message": "Payment complete.",
                        "type": "authorized"},
            "paid": True, "payment_intent": self.token("pi_3"), "payment_method": self.token("pm_1"),
            "payment_method_details": {"card": {"brand": "visa", "checks": {
                "address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                "country": "DE", "exp_month": self.rng.randint(1, 12), "exp_year": 2030,
                "fingerprint": self.token("", 16), "funding": "credit", "last4": "4242",
                "network": "visa", "three_d_secure": None, "wallet": None}, "type": "card"},
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{self.token('', 60)}",
            "refunded": True, "status": "succeeded", "transfer_group": None,
        }

    def account(self, account: str, now: int) -> dict[str, Any]:
        return {
            "id": account, "object": "account",
            "business_profile": {"mcc": "4121", "name": None, "product_description": "Ride-hailing driver",
                                 "support_email": None, "support_phone": None, "url": None},
            "business_type": "individual",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True, "country": "DE", "created": now - 86_400,
            "default_currency": "eur", "details_submitted": True,
            "email": f"driver-{self.token('', 8).lower()}@example.com",
            "external_accounts": {"object": "list", "data": [], "has_more": False, "total_count": 1,
                                  "url": f"/v1/accounts/{account}/external_accounts"},
            "future_requirements": {"alternatives": [], "current_deadline": None, "currently_due": [],
                                    "disabled_reason": None, "errors": [], "eventually_due": [],
                                    "past_due": [], "pending_verification": []},
            "metadata": {"driver_id": str(uuid.uuid4())}, "payouts_enabled": True,
            "requirements": {"alternatives": [], "current_deadline": None, "currently_due": [],
                             "disabled_reason": None, "errors": [], "eventually_due": [],
                             "past_due": [], "pending_verification": []},
            "settings": {"payouts": {"debit_negative_balances": True, "schedule": {
                "delay_days": 7, "interval": "daily"}, "statement_descriptor": None}},
            "tos_acceptance": {"date": now - 86_000}, "type": "express",
        }


@dataclass
class EventFile:
    """A file of `Stripe-Signature<TAB>body` lines and the event ids in it, in order."""

    path: Path
    ids: list[str]
    mean_bytes: float = 0.0

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def sign(body: str, secret: str) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time())))


def write_events(bodies: Iterable[tuple[str, str]], secret: str) -> EventFile:
    """Sign each `(event id, body)` now with `secret` into a new file."""
    path = Path(tempfile.mkstemp(prefix="bench-webhooks-", suffix=".tsv")[1])
    ids: list[str] = []
    size = 0
    with path.open("w", encoding="utf-8") as out:
        for event_id, body in bodies:
            out.write(f"{sign(body, secret)}\t{body}\n")
            ids.append(event_id)
            size += len(body.encode())
    return EventFile(path=path, ids=ids, mean_bytes=size / len(ids) if ids else 0.0)


def new_events(maker: EventMaker, tag: str, count: int, secret: str = SECRET) -> EventFile:
    now = int(time.time())

    def bodies() -> Iterable[tuple[str, str]]:
        for index in range(count):
            event_id = maker.event_id(tag, index)
            yield event_id, json.dumps(maker.body(event_id, index, now), separators=(",", ":"))

    return write_events(bodies(), secret)


def resign(source: EventFile, ids: set[str]) -> EventFile:
    """The events of `source` whose id is in `ids`, signed again now (Stripe signs each delivery)."""
    def bodies() -> Iterable[tuple[str, str]]:
        with source.path.open(encoding="utf-8") as lines:
            for event_id, line in zip(source.ids, lines, strict=True):
                if event_id in ids:
                    yield event_id, line.rstrip("\n").partition("\t")[2]

    return write_events(bodies(), SECRET)


# --- runs -----------------------------------------------------------------------------------------
@dataclass
class Phase:
    label: str
    kind: str  # "paced" or "wrk"
    expect: str  # "new", "duplicate" or "400"
    tag: str = ""
    wrk: WrkResult | None = None
    paced: PacedResult | None = None
    answers: dict[str, int] = field(default_factory=dict)
    sent_ids: set[str] = field(default_factory=set)
    #: Requests the load generator sent (more than `sent_ids` when wrk ran out of events and repeated).
    requests_sent: int = 0
    wrapped: int = 0
    web_cpu_pct: float = 0.0
    web_cpu_s: float = 0.0
    worker_cpu_pct: float = 0.0
    pg_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    load: str = ""
    check: str = ""
    check_ok: bool = True

    @property
    def measured(self) -> bool:
        return self.label != "warm-up"

    @property
    def web_cpu_per_request_us(self) -> float:
        """Web CPU per answered request (the paced window includes its warm-up's requests)."""
        return self.web_cpu_s / max(1, sum(self.answers.values())) * 1e6

    @property
    def wrong_answers(self) -> int:
        """Answers other than the run expects (a replayed event answering `duplicate: false` counts)."""
        a = self.answers
        if self.expect == "400":
            return sum(n for k, n in a.items() if k != "bad_request")
        wrong = sum(n for k, n in a.items() if k not in ("new", "duplicate"))
        return wrong + (a.get("new", 0) if self.expect == "duplicate" else 0)

    @property
    def errors(self) -> int:
        if self.wrk is not None:
            return self.wrk.socket_errors + self.wrong_answers
        if self.paced is not None:
            return self.paced.errors + self.wrong_answers
        return self.wrong_answers

    @property
    def non_2xx(self) -> int:
        if self.wrk is not None:
            return self.wrk.non_2xx
        return self.paced.non_2xx if self.paced is not None else 0

    @property
    def rate(self) -> float:
        return self.wrk.rps if self.wrk is not None else self.paced.rate  # type: ignore[union-attr]

    def latency(self, point: str) -> float:
        if self.wrk is not None:
            return {"p50": self.wrk.p50_ms, "p90": self.wrk.p90_ms, "p99": self.wrk.p99_ms,
                    "max": self.wrk.max_ms}[point]
        assert self.paced is not None
        return self.paced.latency_ms.get(point, float("nan"))


def postgres_cpu() -> dict[int, float]:
    """User + system CPU seconds of every `postgres` process on the machine (server and backends), by PID."""
    found: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the `postgres` processes used since `before` (a backend that ended meanwhile is lost)."""
    return sum(max(0.0, spent - before.get(pid, 0.0)) for pid, spent in postgres_cpu().items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="POST /webhooks/stripe: max throughput and paced latency")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced events/s (default 1000)")
    parser.add_argument("--paced-connections", type=int, default=64,
                        help="keep-alive connections of the paced generator (default 64)")
    parser.add_argument("--skip-paced", action="store_true", help="leave out the paced run")
    parser.add_argument("--skip-duplicate", action="store_true", help="leave out the replayed-events run")
    parser.add_argument("--skip-bad-signature", action="store_true", help="leave out the 400 run")
    parser.add_argument("--with-worker", action="store_true",
                        help="also run the Procfile's worker line (relay + payments.handle_event; its "
                             "Stripe calls go to a closed port and fail)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="py-spy the web process during the wrk run of new events (.svg, .txt, .json)")
    parser.add_argument("--web-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the web process (repeatable), e.g. DB_POOL_SIZE=20")
    parser.add_argument("--no-pin", action="store_true", help="let the OS place every process")
    parser.add_argument("--fail-under-target", action="store_true")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.web_env):
        parser.error("--web-env takes NAME=VALUE")
    if min(args.duration, args.connections, args.threads, args.paced_connections) < 1 or args.rate <= 0:
        parser.error("durations, connections, threads and --rate must be positive")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, stack: BenchStack, wrk: str) -> None:
        self.args = args
        self.stack = stack
        self.wrk = wrk
        self.web_cpus, self.client_cpus = split_cpus(args.no_pin)
        self.maker = EventMaker(int.from_bytes(os.urandom(4), "big"))
        self.conn = psycopg.connect(stack.libpq_dsn, autocommit=True)
        self.files: list[EventFile] = []
        self.phases: list[Phase] = []
        self.py_spy: str | None = None
        if args.profile is not None:
            self.py_spy = find_py_spy()
            if self.py_spy is None:
                raise BenchError("--profile needs py-spy: pip install --target /tmp/pyspy py-spy")

    # --- processes
    def start_web(self) -> WebProcess:
        extra = dict(item.split("=", 1) for item in self.args.web_env)
        web = WebProcess.start({**self.stack.env, **WEB_ENV, **extra})
        try:
            web.wait_ready()
            if self.web_cpus:
                web.pin(self.web_cpus)
            self.check_route(web)
        except BaseException:
            web.stop(keep_log=True)
            raise
        return web

    def start_worker(self) -> WorkerProcess:
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: Stripe calls fail at once
        worker = WorkerProcess.start({**self.stack.env, **WEB_ENV, "STRIPE_API_BASE": closed,
                                      "STRIPE_MAX_NETWORK_RETRIES": "0", "STRIPE_REQUEST_TIMEOUT": "2"})
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            worker.check_alive()
            if self.conn.execute("SELECT count(*) FROM jobs WHERE state = 'waiting'").fetchone() == (0,):
                say("the worker relayed the waiting outbox rows; measuring")
                return worker
            time.sleep(0.2)
        worker.stop(keep_log=True)
        raise BenchError("the worker did not relay the outbox rows in 45 s")

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
        argv = [self.wrk, f"-t{self.args.threads}", f"-c{self.args.connections}", f"-d{duration_s}s",
                "--timeout", "5s", "-s", str(LUA), f"{web.base_url}{PATH}"]
        env = {**os.environ, "BENCH_EVENTS": str(events.path), "BENCH_THREADS": str(self.args.threads)}
        cpus = self.client_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 120,
                              preexec_fn=pin)
        if done.returncode != 0:
            raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-1000:]}")
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
        if line is None:
            raise BenchError(f"wrk printed no BENCH_RESULT line:\n{done.stdout[-2000:]}{done.stderr[-1000:]}")
        return WrkResult.parse(done.stdout), json.loads(line.removeprefix("BENCH_RESULT "))

    def sent_by_wrk(self, events: EventFile, extra: dict[str, Any]) -> tuple[set[str], int]:
        """Ids wrk sent (thread k took lines k, k+n, …, in order) and how often a slice ran out."""
        threads = extra["threads"]
        sent: set[str] = set()
        for k, thread in enumerate(threads):
            mine = events.ids[k::len(threads)]
            sent.update(mine[:thread["sent"]])
        return sent, sum(int(t["wrapped"]) for t in threads)

    def measure(self, phase: Phase, web: WebProcess, worker: WorkerProcess | None,
                events: EventFile, *, duration_s: int | None = None, profile: bool = False) -> Phase:
        duration = duration_s or self.args.duration
        say(f"{phase.label}: {phase.kind}, {duration} s, {len(events.ids):,} events "
            f"(~{events.mean_bytes:,.0f} bytes each)")
        phase.load = load_average_text()
        web_cpu, worker_cpu, pg_cpu = (web.cpu_seconds(), worker.cpu_seconds() if worker else 0.0,
                                       postgres_cpu())
        machine = MachineCpu()
        started = time.monotonic()
        profiler = None
        if profile and self.py_spy and self.args.profile is not None:
            profiler = start_profiler(self.py_spy, web.pid, duration, self.args.profile)
        if phase.kind == "wrk":
            phase.wrk, extra = self.run_wrk(web, events, duration)
            phase.answers = {k: int(v) for k, v in extra["answers"].items() if v}
            phase.sent_ids, phase.wrapped = self.sent_by_wrk(events, extra)
            phase.requests_sent = sum(int(t["sent"]) for t in extra["threads"])
            elapsed = phase.wrk.duration_s
        else:
            phase.paced, extra = self.run_paced(web, events)
            phase.answers = {("bad_request" if k == "400" else k): int(v)
                             for k, v in extra["answers"].items()}
            unwritten = {int(i) for i in extra["unwritten"]}
            phase.sent_ids = {event_id for i, event_id in enumerate(events.ids[:int(extra["events_sent"])])
                              if i not in unwritten}
            phase.requests_sent = len(phase.sent_ids)
            elapsed = time.monotonic() - started  # its start-up and warm-up ran inside the window
        phase.machine_busy_pct = machine.busy_percent()
        phase.web_cpu_s = web.cpu_seconds() - web_cpu
        phase.web_cpu_pct = phase.web_cpu_s / elapsed * 100
        phase.pg_cpu_pct = postgres_cpu_since(pg_cpu) / elapsed * 100
        if worker is not None:
            phase.worker_cpu_pct = (worker.cpu_seconds() - worker_cpu) / elapsed * 100
            worker.check_alive()
        if profiler is not None:
            _, error = profiler.communicate(timeout=60)
            if profiler.returncode != 0:
                say(f"py-spy exited {profiler.returncode}: {error.decode(errors='replace')[-500:]}")
            else:
                say(f"profile written to {self.args.profile}")
        web.check_alive()
        self.phases.append(phase)
        return phase

    def run_paced(self, web: WebProcess, events: EventFile) -> tuple[PacedResult, dict[str, Any]]:
        argv = [sys.executable, str(PACED), "--url", f"{web.base_url}{PATH}", "--events", str(events.path),
                "--rate", str(self.args.rate), "--duration", str(self.args.duration),
                "--warmup", str(WARM_UP_S), "--connections", str(self.args.paced_connections)]
        cpus = self.client_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pin,
                              timeout=WARM_UP_S + self.args.duration + 120)
        if done.returncode != 0:
            raise BenchError(f"webhooks_paced.py exited {done.returncode}: {done.stderr.strip()[-1500:]}")
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), "")
        return PacedResult.parse(done.stdout), json.loads(line.removeprefix("BENCH_RESULT "))

    def runs(self) -> None:
        web = self.start_web()
        worker: WorkerProcess | None = None
        try:
            if self.args.with_worker:
                worker = self.start_worker()
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
                worker = None
            time.sleep(0.5)  # requests wrk left in flight finish
        finally:
            if worker is not None:
                worker.stop(keep_log=True)
            web.stop(keep_log=any(p.errors for p in self.phases))

    # --- checks
    def check(self) -> None:
        """Per run: stored ids == ids sent, one outbox row each; stored == 200 `duplicate: false`."""
        outbox_kept = not self.args.with_worker  # the relay deletes the rows it moves
        for phase in self.phases:
            if phase.label.startswith("replayed"):
                continue  # checked with its run of new events
            stored = {row[0] for row in self.conn.execute(
                "SELECT id FROM stripe_events WHERE id LIKE %s", (self.maker.prefix(phase.tag) + "%",))}
            outbox: dict[str, int] = dict(self.conn.execute(
                "SELECT args->>0, count(*) FROM jobs WHERE actor = 'payments.handle_event' "
                "AND args->>0 LIKE %s GROUP BY 1", (self.maker.prefix(phase.tag) + "%",)).fetchall())
            new = phase.answers.get("new", 0)
            replays = [p for p in self.phases if p.tag == phase.tag and p.label.startswith("replayed")]
            new_on_replay = sum(p.answers.get("new", 0) for p in replays)
            if phase.expect == "400":
                phase.check_ok = not stored and not outbox
                phase.check = f"{len(stored)} stored, {sum(outbox.values())} outbox rows (expected none)"
                continue
            missing, extra = phase.sent_ids - stored, stored - phase.sent_ids
            # each event answers `duplicate: false` once; a request still unanswered when the load
            # generator stopped (wrk never reads the answers in flight at its end) may be stored too
            unanswered = max(0, phase.requests_sent - sum(phase.answers.values()))
            doubled = sum(1 for n in outbox.values() if n != 1)
            ok = not missing and not extra and new_on_replay == 0
            ok = ok and new <= len(stored) <= new + unanswered
            if outbox_kept:
                ok = ok and set(outbox) == stored and not doubled
            phase.check_ok = ok
            phase.check = (
                f"sent {len(phase.sent_ids):,}, answered 200 new {new:,}"
                + (f" (+ {unanswered} unanswered at the generator's stop)" if unanswered else "")
                + f"; stored {len(stored):,} ({len(missing)} missing, {len(extra)} extra); "
                + (f"outbox rows {sum(outbox.values()):,} ({doubled} ids not exactly once)" if outbox_kept
                   else "outbox: relayed by the worker")
                + (f"; replay answered {sum(p.answers.get('duplicate', 0) for p in replays):,} duplicate, "
                   f"{new_on_replay} new" if replays else ""))

        rows = self.conn.execute("SELECT count(*) FROM stripe_events").fetchone()
        outbox_rows = self.conn.execute("SELECT count(*), count(DISTINCT args->>0) FROM jobs "
                                   "WHERE actor = 'payments.handle_event'").fetchone()
        assert rows is not None and outbox_rows is not None
        counted = [p for p in self.phases if p.expect == "new"]
        new = sum(p.answers.get("new", 0) for p in self.phases)
        unanswered = sum(max(0, p.requests_sent - sum(p.answers.values())) for p in counted)
        total = Phase("all runs", "sum", "new")
        total.check_ok = new <= rows[0] <= new + unanswered and (
            not outbox_kept or outbox_rows[0] == outbox_rows[1] == rows[0])
        total.check = (f"stripe_events rows {rows[0]:,}; 200 duplicate=false answers {new:,} "
                       f"(+ {unanswered} unanswered); payments.handle_event outbox rows "
                       + (f"{outbox_rows[0]:,} for {outbox_rows[1]:,} distinct events" if outbox_kept
                          else "relayed by the worker"))
        self.phases.append(total)

    def close(self) -> None:
        self.conn.close()
        for events in self.files:
            events.remove()


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value < 10_000 else f"{value / 1000:.1f}s"


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk = ensure_wrk()
        stack = BenchStack.create()
    except BenchError as error:
        say(str(error))
        return 2
    bench: Bench | None = None
    idle = MachineCpu()
    time.sleep(1.0)
    load_before = f"{load_average_text()}, {idle.busy_percent():.0f} % busy over the last second"
    try:
        bench = Bench(args, stack, wrk)
        bench.runs()
        bench.check()
    except BenchError as error:
        say(str(error))
        return 2
    finally:
        if bench is not None:
            bench.close()
        stack.close()

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
