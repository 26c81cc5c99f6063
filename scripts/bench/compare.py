"""The farm's benchmarks and the Node twin's, back to back in one sitting, in ONE table.

    .venv/bin/python scripts/bench/compare.py                 # ~15 min: every figure, one run each side
    .venv/bin/python scripts/bench/compare.py --runs 3        # medians of 3 (sides alternate per run)
    .venv/bin/python scripts/bench/compare.py --quick         # ~5 min smoke check: shorter, fewer drivers
    .venv/bin/python scripts/bench/compare.py --only twin --skip notifications,rss

The farm side runs the existing benches as subprocesses (`bench_rides.py --drivers N`,
`bench_offer_latency.py` at two rates, `bench_dispatch.py`, `bench_notifications.py`), each with
`BENCH_RESULTS` pointing at a file of its own, and reads the figures they append there.

The twin side (`/work/shared/peers/node-twin`, Express + BullMQ; never copied into this repo)
is copied to a temporary directory; its `node_modules` come from `npm ci` in a cache under
`/tmp` (keyed by its lock file). It runs on a database `peer_twin_<random>` of its own (created,
then dropped), an empty Redis DB index (flushed by its seed, and at the end), its own Socket.IO
channel prefix and a free port; compare.py starts its web and worker processes and stops them by
PID. Its figures come from its own scripts (`bench/seed.js`, `bench/create_rides.lua` under wrk,
`bench/e2e_latency.js`, `bench/step_throughput.js`, `bench/queue_ctl.js`), driven with the farm
benches' parameters; the paced 1,000/s run uses the farm's `loadgen.py` against the twin, since
the twin has no paced bench.

Ratio: > 1 means the farm is better (farm/twin for rates, twin/farm for latencies and memory).

Exits 0 when every wanted figure was measured cleanly, 1 when a bench reported errors (its
figures are flagged), 2 when a side (or a bench of it) could not run (which, and why, is printed;
the figures it did not measure are shown as —).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TWIN_SOURCE = Path("/work/shared/peers/node-twin")
CACHE_ROOT = Path(tempfile.gettempdir()) / "dispatch-farm-compare"
SIDES = ("farm", "twin")
_TWIN_RESULT = re.compile(r"^RESULT (\{.*\})\s*$", re.MULTILINE)


# --- what is compared ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """The parameters both sides run with (the farm benches' defaults unless the brief says other)."""

    drivers: int = 100_000
    box_km: float = 40.0
    connections: int = 64
    duration_s: int = 10
    paced_rate: float = 1_000.0
    offer_rate: float = 200.0
    offer_s: float = 10.0
    slow_rate: float = 5.0
    slow_s: float = 10.0
    offer_drivers: int = 5
    steps: int = 5_000
    notify_messages: int = 6_000
    notify_max_s: float = 25.0
    warm_up_s: int = 2

    @property
    def offer_rides(self) -> int:
        return int(self.offer_rate * self.offer_s)

    @property
    def slow_rides(self) -> int:
        return int(self.slow_rate * self.slow_s)


FULL = Params()
QUICK = Params(drivers=20_000, duration_s=3, offer_s=2.0, slow_s=3.0, steps=500, notify_messages=1_000,
               notify_max_s=8.0)
#: Untimed dispatch steps the twin's worker runs before its measured batch.
STEP_WARM_UP = 200
#: The notification plans (fake latency ms, worker threads) the farm is measured with.
NOTIFY_PLANS = ((0, 8), (100, 64))


@dataclass(frozen=True)
class Figure:
    key: str
    group: str  # what --skip names
    label: str  # str.format'ed with the Params
    unit: str  # "/s", "ms" or "MB"
    higher_is_better: bool
    target: str = "—"
    #: The farm measurement shown in this row (two rows can show one farm figure against two twin variants).
    farm_key: str = ""
    #: The twin measures nothing like it (its cell shows —).
    twin: bool = True

    @property
    def farm_measurement(self) -> str:
        return self.farm_key or self.key


FIGURES: tuple[Figure, ...] = (
    Figure("rides_web", "rides-web", "POST /rides max, web only (no worker)", "/s", True),
    Figure("rides_worker", "rides-worker", "POST /rides max, worker dispatching · twin: 5 km search", "/s",
           True, "≥ 3,000/s"),
    Figure("rides_worker_probe", "rides-worker", "POST /rides max, worker dispatching · twin: 1 km probe",
           "/s", True, "≥ 3,000/s", farm_key="rides_worker"),
    Figure("rides_paced_p99", "rides-paced",
           "POST /rides paced {paced_rate:,.0f}/s, worker on: p99 · twin: 5 km", "ms", False, "≤ 50 ms"),
    Figure("rides_paced_p99_probe", "rides-paced",
           "POST /rides paced {paced_rate:,.0f}/s, worker on: p99 · twin: 1 km probe", "ms", False, "≤ 50 ms",
           farm_key="rides_paced_p99"),
    Figure("offer_p50", "offer-200", "ride → first ride:offer at {offer_rate:g}/s: p50", "ms", False),
    Figure("offer_p95", "offer-200", "ride → first ride:offer at {offer_rate:g}/s: p95", "ms", False,
           "≤ 30 ms"),
    Figure("offer_p99", "offer-200", "ride → first ride:offer at {offer_rate:g}/s: p99", "ms", False),
    Figure("offer_slow_p50", "offer-5", "ride → first ride:offer at {slow_rate:g}/s: p50", "ms", False),
    Figure("steps", "steps", "dispatch.step/s, 1 worker process · twin: one 5 km search", "/s", True,
           "≥ 1,000/s"),
    Figure("steps_probe", "steps", "dispatch.step/s, 1 worker process · twin: 1 km probe first", "/s", True,
           "≥ 1,000/s", farm_key="steps"),
    Figure("notify_0_8", "notifications", "notifications.send msg/s, fake 0 ms, 8 threads", "/s", True,
           "≥ 500/s", twin=False),
    Figure("notify_100_64", "notifications", "notifications.send msg/s, fake 100 ms, 64 threads", "/s", True,
           twin=False),
    Figure("rss_web", "rss", "RSS web, after the {offer_rate:g}/s offer run", "MB", False),
    Figure("rss_worker", "rss", "RSS worker, after the {offer_rate:g}/s offer run", "MB", False),
)
GROUPS = tuple(dict.fromkeys(f.group for f in FIGURES))


# --- results ---------------------------------------------------------------------------------------
#: Figures measured by one bench, and notes on those to read with care (errors, a rate not reached).
Extracted = tuple[dict[str, float], dict[str, str]]


@dataclass
class SideRun:
    """What one side measured in one run."""

    values: dict[str, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    #: Benches that could not run or measured nothing: why.
    failures: list[str] = field(default_factory=list)
    #: Benches that ran but reported errors (their figures are flagged).
    errors: list[str] = field(default_factory=list)
    load: str = ""
    seconds: float = 0.0
    #: How busy the machine's CPUs were (%) in a short window before each of its benches, while
    #: nothing of ours ran: another session's work, which depresses the figures.
    background: list[float] = field(default_factory=list)

    def note_background(self) -> None:
        self.background.append(background_busy())

    def add(self, extracted: Extracted, note: str = "") -> None:
        values, flags = extracted
        self.values.update(values)
        for key in values:
            parts = [p for p in (flags.get(key, ""), note) if p]
            if parts:
                self.flags[key] = "; ".join(parts)


@dataclass
class Combined:
    values: dict[str, float]
    flags: dict[str, str]
    #: How many runs measured each figure.
    counts: dict[str, int]


def median(values: Iterable[float]) -> float:
    ordered = [v for v in values if not math.isnan(v)]
    if not ordered:
        raise ValueError("no values")
    return float(statistics.median(ordered))


def combine(runs: list[SideRun]) -> Combined:
    """Median of each figure over the runs that measured it; flags keep their run number."""
    keys = dict.fromkeys(k for run in runs for k in run.values)
    values, flags, counts = {}, {}, {}
    for key in keys:
        measured = [run.values[key] for run in runs if key in run.values and not math.isnan(run.values[key])]
        if not measured:
            continue
        values[key] = median(measured)
        counts[key] = len(measured)
        notes = [(f"run {n}: " if len(runs) > 1 else "") + run.flags[key]
                 for n, run in enumerate(runs, 1) if key in run.flags]
        if notes:
            flags[key] = "; ".join(notes)
    return Combined(values, flags, counts)


def ratio(farm: float | None, twin: float | None, higher_is_better: bool) -> float | None:
    """> 1 means the farm is better: farm/twin for a rate, twin/farm for a latency or a size."""
    if farm is None or twin is None or math.isnan(farm) or math.isnan(twin) or farm <= 0 or twin <= 0:
        return None
    return farm / twin if higher_is_better else twin / farm


def fmt_value(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value / 1000:,.1f} s" if value >= 10_000 else f"{value:,.1f} ms"
    return f"{value:,.0f} {unit}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


@dataclass(frozen=True)
class Row:
    label: str
    target: str
    farm: str
    twin: str
    ratio: str


def table_rows(figures: Iterable[Figure], params: Params, farm: Combined | None, twin: Combined | None,
               runs: int) -> tuple[list[Row], list[str]]:
    """The table's rows and its footnotes (flags, and figures measured in fewer than `runs` runs)."""
    rows: list[Row] = []
    notes: list[str] = []
    for figure in figures:
        label = figure.label.format(**{name: getattr(params, name) for name in
                                       ("paced_rate", "offer_rate", "slow_rate")})
        cells: dict[str, str] = {}
        raw: dict[str, float | None] = {}
        for side, combined, key, exists in (("farm", farm, figure.farm_measurement, True),
                                            ("twin", twin, figure.key, figure.twin)):
            value = combined.values.get(key) if (combined is not None and exists) else None
            raw[side] = value
            if value is None:
                cells[side] = "—"
                continue
            mark = ""
            assert combined is not None
            if key in combined.flags:
                mark = " !"
                note = f"{side}, {label}: {combined.flags[key]}"
                if note not in notes:
                    notes.append(note)
            if combined.counts.get(key, runs) < runs:
                mark += f" ({combined.counts[key]}/{runs})"
            cells[side] = fmt_value(value, figure.unit) + mark
        rows.append(Row(label, figure.target, cells["farm"], cells["twin"],
                        fmt_ratio(ratio(raw["farm"], raw["twin"], figure.higher_is_better))))
    return rows, notes


def render_table(rows: list[Row]) -> str:
    header = Row("figure", "target", "farm", "twin", "ratio")
    names = ("label", "target", "farm", "twin", "ratio")
    width = [max(len(getattr(r, name)) for r in [header, *rows]) for name in names]
    lines = []
    for number, row in enumerate([header, *rows]):
        lines.append(f"{row.label:<{width[0]}}  {row.target:<{width[1]}}  {row.farm:>{width[2]}}  "
                     f"{row.twin:>{width[3]}}  {row.ratio:>{width[4]}}")
        if number == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


# --- reading the farm benches' figures -------------------------------------------------------------
def read_records(path: Path, bench: str) -> list[dict[str, Any]]:
    """The `figures` of the JSON lines `bench` appended to `path` (harness.record_result)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("bench") == bench:
                out.append(record["figures"])
    return out


def paced_notes(target_rate: float, reached: float, errors: int, unanswered: int) -> str:
    notes = []
    if errors:
        notes.append(f"{errors:,} errors")
    if unanswered:
        notes.append(f"{unanswered:,} unanswered (p99 of the answered ones)")
    if reached < 0.95 * target_rate:
        notes.append(f"reached {reached:,.0f}/s of {target_rate:,.0f}/s")
    return "; ".join(notes)


def extract_farm_rides(figures: Mapping[str, Any]) -> Extracted:
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for phase in figures.get("phases", []):
        if phase.get("probe"):
            continue
        key = {("wrk", True): "rides_worker", ("wrk", False): "rides_web",
               ("paced", True): "rides_paced_p99"}.get((phase["kind"], bool(phase["worker"])))
        if key is None:
            continue
        if phase["kind"] == "paced":
            values[key] = float(phase["p99_ms"])
            note = paced_notes(float(figures["rate"]), float(phase["rate"]), int(phase["errors"]),
                               int(phase["unanswered"]))
        else:
            values[key] = float(phase["rate"])
            note = f"{phase['errors']:,} errors" if phase["errors"] else ""
        if note:
            flags[key] = note
    return values, flags


def extract_farm_offers(figures: Mapping[str, Any], *, slow: bool) -> Extracted:
    offers = figures["offer_ms"]
    flags: dict[str, str] = {}
    if slow:
        values = {"offer_slow_p50": float(offers["p50"])}
    else:
        values = {"offer_p50": float(offers["p50"]), "offer_p95": float(offers["p95"]),
                  "offer_p99": float(offers["p99"]),
                  "rss_web": float(figures["web_rss"]), "rss_worker": float(figures["worker_rss"])}
    if figures.get("problems"):
        for key in values:
            if key.startswith("offer"):
                flags[key] = f"{figures['problems']} rides failed or got no offer"
    return values, flags


def extract_farm_dispatch(figures: Mapping[str, Any]) -> Extracted:
    drain = figures["drain"]
    notes = []
    if drain.get("timed_out"):
        notes.append(f"drain timed out ({drain.get('done', 0):,} of {figures['steps']:,} steps)")
    if drain.get("failed_jobs"):
        notes.append(f"{drain['failed_jobs']} failed jobs")
    flags = {"steps": "; ".join(notes)} if notes else {}
    return {"steps": float(drain["rate_first_last"])}, flags


def extract_farm_notifications(figures: Mapping[str, Any]) -> Extracted:
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for drain in figures.get("runs", []):
        run = drain["run"]
        if run.get("processes", 1) != 1:
            continue
        key = f"notify_{run['latency_ms']}_{run['threads']}"
        values[key] = float(drain["rate"])
        notes = []
        if drain.get("failed"):
            notes.append(f"{drain['failed']} failed")
        if drain.get("timed_out"):
            notes.append(f"hit the time limit ({drain.get('sent', 0):,}/{figures['messages']:,} sent)")
        if notes:
            flags[key] = "; ".join(notes)
    return values, flags


# --- reading the twin's figures ----------------------------------------------------------------------
def parse_twin_results(output: str) -> list[dict[str, Any]]:
    """The `RESULT {json}` lines the twin's scripts print (wrk's create_rides.lua, e2e, steps, queue_ctl)."""
    return [json.loads(match) for match in _TWIN_RESULT.findall(output)]


def twin_result(output: str, bench: str) -> dict[str, Any]:
    for result in parse_twin_results(output):
        if result.get("bench") == bench:
            return result
    raise LookupError(f"no RESULT line of {bench} in its output:\n{output[-1500:]}")


def extract_twin_create(result: Mapping[str, Any], key: str) -> Extracted:
    errors = int(result.get("non2xx", 0)) + int(result.get("socketErrors", 0))
    return {key: float(result["rps"])}, ({key: f"{errors:,} errors"} if errors else {})


def extract_twin_e2e(result: Mapping[str, Any], *, slow: bool) -> Extracted:
    if slow:
        values = {"offer_slow_p50": float(result["p50ms"])}
    else:
        values = {"offer_p50": float(result["p50ms"]), "offer_p95": float(result["p95ms"]),
                  "offer_p99": float(result["p99ms"])}
    missing = int(result["rides"]) - int(result["offered"])
    return values, ({k: f"{missing} rides failed or got no offer" for k in values} if missing else {})


def extract_twin_steps(result: Mapping[str, Any], key: str) -> Extracted:
    left = int(result.get("left", 0))
    flags = {key: f"{left:,} steps left at the time limit"} if left else {}
    return {key: float(result["stepsPerSec"])}, flags


# --- running things ------------------------------------------------------------------------------------
def say(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def load_average_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def background_busy(window_s: float = 2.0) -> float:
    """% of all CPUs busy over `window_s` (/proc/stat), taken while none of our processes run."""
    from scripts.bench.measure import MachineCpu

    meter = MachineCpu()
    time.sleep(window_s)
    return meter.busy_percent()


def run_logged(argv: list[str], *, log: Path, env: Mapping[str, str], cwd: Path, timeout_s: float,
               preexec_fn: Callable[[], None] | None = None) -> tuple[int, str]:
    """Run a command to completion with its output appended to `log`; returns (exit code, output).

    On a timeout it gets SIGINT (a bench stops what it started in its `finally`), then SIGKILL."""
    with tempfile.TemporaryFile() as capture:
        popen = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=capture,
                                 stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        try:
            code = popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
            code = -1
        except BaseException:
            popen.send_signal(signal.SIGINT)
            popen.wait(timeout=60)
            raise
        capture.seek(0)
        output = capture.read().decode(errors="replace")
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n{output}\n[exit {code}]\n\n")
    if code == -1:
        output += f"\n(timed out after {timeout_s:.0f} s)"
    return code, output


def last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


# --- the farm ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FarmBench:
    name: str
    script: str
    args: tuple[str, ...]
    bench: str  # the record's "bench"
    groups: frozenset[str]
    extract: Callable[[Mapping[str, Any]], Extracted]
    timeout_s: float


def farm_benches(params: Params, skip: set[str]) -> list[FarmBench]:
    p = params
    rides_args = ["--duration", str(p.duration_s), "--connections", str(p.connections), "--rate",
                  f"{p.paced_rate:g}", "--drivers", str(p.drivers), "--skip-send-variant"]
    if "rides-web" in skip:
        rides_args.append("--skip-no-worker")
    offer_args = ("--drivers", str(p.offer_drivers), "--connections", str(p.connections))
    plans: list[str] = []
    for latency, threads in NOTIFY_PLANS:
        plans += ["--plan", f"{latency}:{threads}"]
    benches = [
        FarmBench("bench_rides.py", "bench_rides.py", tuple(rides_args), "rides",
                  frozenset({"rides-web", "rides-worker", "rides-paced"}), extract_farm_rides, 900),
        FarmBench(f"bench_offer_latency.py at {p.offer_rate:g}/s", "bench_offer_latency.py",
                  ("--rate", f"{p.offer_rate:g}", "--rides", str(p.offer_rides), *offer_args),
                  "offer_latency", frozenset({"offer-200", "rss"}),
                  lambda f: extract_farm_offers(f, slow=False), 600),
        FarmBench(f"bench_offer_latency.py at {p.slow_rate:g}/s", "bench_offer_latency.py",
                  ("--rate", f"{p.slow_rate:g}", "--rides", str(p.slow_rides), *offer_args),
                  "offer_latency", frozenset({"offer-5"}),
                  lambda f: extract_farm_offers(f, slow=True), 600),
        FarmBench("bench_dispatch.py", "bench_dispatch.py",
                  ("--drivers", str(p.drivers), "--steps", str(p.steps), "--inline-steps", "0"), "dispatch",
                  frozenset({"steps"}), extract_farm_dispatch, 900),
        FarmBench("bench_notifications.py", "bench_notifications.py",
                  (*plans, "--messages", str(p.notify_messages), "--max-seconds", f"{p.notify_max_s:g}"),
                  "notifications", frozenset({"notifications"}), extract_farm_notifications, 600),
    ]
    return [b for b in benches if b.groups - skip]


def run_farm(params: Params, skip: set[str], logdir: Path, run: int) -> SideRun:
    from scripts.bench.harness import REPO, RESULTS_ENV

    side = SideRun(load=load_average_text())
    say(f"farm, run {run}: load average {side.load}")
    started = time.monotonic()
    log = logdir / f"farm-run{run}.log"
    for number, bench in enumerate(farm_benches(params, skip)):
        results = logdir / f"farm-run{run}-{number}-{bench.bench}.jsonl"
        results.unlink(missing_ok=True)
        argv = [sys.executable, str(REPO / "scripts" / "bench" / bench.script), *bench.args]
        say(f"farm: {bench.name} {' '.join(bench.args)}")
        side.note_background()
        t0 = time.monotonic()
        code, output = run_logged(argv, log=log, env={**os.environ, RESULTS_ENV: str(results)}, cwd=REPO,
                                  timeout_s=bench.timeout_s)
        say(f"farm: {bench.name} exited {code} after {time.monotonic() - t0:.0f} s")
        records = read_records(results, bench.bench)
        if not records:
            side.failures.append(f"{bench.name} exited {code} and recorded no figures: {last_lines(output)}")
            continue
        try:
            extracted = bench.extract(records[-1])
        except (KeyError, TypeError, ValueError) as error:
            side.failures.append(f"{bench.name}: its figures lack {error!r} (did its output change?)")
            continue
        note = ""
        if code != 0:
            note = f"{bench.name} exited {code}"
            side.errors.append(f"{bench.name} exited {code}: {last_lines(output, 2)}")
        side.add(extracted, note)
    side.seconds = time.monotonic() - started
    return side


# --- the twin --------------------------------------------------------------------------------------------
def twin_install(source: Path, cache_root: Path, log: Path) -> Path:
    """`node_modules` for the twin's lock file: `npm ci` once into a cache, reused while it is unchanged."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((source / name).read_bytes())
    target = cache_root / f"twin-modules-{digest.hexdigest()[:16]}"
    if (target / "node_modules" / ".compare-ok").exists():
        return target / "node_modules"
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="twin-install-", dir=cache_root))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(source / name, staging / name)
        npm = shutil.which("npm")
        if npm is None:
            raise TwinError("npm is not on PATH")
        say(f"twin: npm ci into {target}")
        code, output = run_logged([npm, "ci", "--no-audit", "--no-fund"], log=log, env=os.environ,
                                  cwd=staging, timeout_s=600)
        if code != 0:
            raise TwinError(f"npm ci exited {code}: {last_lines(output)}")
        (staging / "node_modules" / ".compare-ok").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target / "node_modules"


class TwinError(RuntimeError):
    """The twin could not be set up or a bench of it failed outright."""


def redis_url_with_db(redis_url: str, index: int) -> str:
    """`redis_url` pointing at DB `index` (a URL's own /N would win over redis-py's `db=` argument)."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{index}", parts.query, parts.fragment))


def redis_db_of(redis_url: str) -> int:
    path = urlsplit(redis_url).path.strip("/")
    return int(path) if path.isdigit() else 0


def free_redis_db(redis_url: str, avoid: set[int]) -> int:
    """The highest Redis DB index holding no key (the twin's seed FLUSHDBs it)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        try:
            databases = int(client.config_get("databases").get("databases") or 16)
        except redis.ResponseError:
            databases = 16
    finally:
        client.close()
    for index in range(databases - 1, 0, -1):
        if index in avoid:
            continue
        probe = redis.Redis.from_url(redis_url_with_db(redis_url, index))
        try:
            if probe.dbsize() == 0:
                return index
        finally:
            probe.close()
    raise TwinError("no empty Redis DB index for the twin")


class TwinSession:
    """One sitting of the twin: its copy, database, Redis DB index, web and worker processes."""

    def __init__(self, params: Params, logdir: Path, run: int, source: Path = TWIN_SOURCE,
                 on_idle: Callable[[], None] | None = None) -> None:
        self.params = params
        #: Called after each reset, while the twin's processes are idle (compare samples the CPUs).
        self.on_idle = on_idle
        self.logdir = logdir
        self.run = run
        self.source = source
        self.log = logdir / f"twin-run{run}.log"
        self.workdir: Path | None = None
        self.database: str | None = None
        self.redis_db: int | None = None
        self.env: dict[str, str] = {}
        self.web: Any = None
        self.worker: Any = None
        self.token = ""
        self.state: dict[str, Any] = {}
        self.base_url = ""

    # --- set-up and tear-down
    def open(self) -> None:
        from sqlalchemy.engine import make_url

        from app.settings import load_settings
        from scripts.bench.processes import free_port

        if shutil.which("node") is None:
            raise TwinError("node is not on PATH")
        if not (self.source / "package-lock.json").exists():
            raise TwinError(f"no twin at {self.source}")
        modules = twin_install(self.source, CACHE_ROOT, self.log)
        self.workdir = Path(tempfile.mkdtemp(prefix="peer-twin-"))
        for item in ("src", "bench", "package.json", "package-lock.json"):
            path = self.source / item
            if path.is_dir():
                shutil.copytree(path, self.workdir / item)
            else:
                shutil.copyfile(path, self.workdir / item)
        for path in [self.workdir, *self.workdir.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the peer's files are read-only; seed.js writes here
        (self.workdir / "node_modules").symlink_to(modules, target_is_directory=True)

        settings = load_settings()
        self.database = f"peer_twin_{secrets.token_hex(4)}"
        database_url = make_url(settings.db.url).set(drivername="postgres", database=self.database)
        self.redis_db = free_redis_db(settings.redis.url, {redis_db_of(settings.redis.url)})
        self.env = {
            **os.environ,
            "PORT": str(free_port()),
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "REDIS_URL": redis_url_with_db(settings.redis.url, self.redis_db),
            "JWT_SECRET": secrets.token_hex(32),
            "SOCKET_IO_KEY": f"{self.database}:socket.io",
            "BID_WINDOW_MS": "3600000",  # as run_all.sh: no check_bids fires mid-run
            "DRIVERS": str(self.params.drivers),
            "BOX_KM": f"{self.params.box_km:g}",
        }
        self.base_url = f"http://127.0.0.1:{self.env['PORT']}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        say(f"twin: database {self.database}, Redis DB {self.redis_db}, port {self.env['PORT']}, "
            f"copy in {self.workdir}")
        self.node("bench/seed.js", timeout_s=300)
        self.state = json.loads((self.workdir / ".bench.json").read_text())
        city = self.state["city"]
        self.env.update({"CITY_LAT": str(city["lat"]), "CITY_LNG": str(city["lng"])})
        self.token = self.node("bench/token.js").strip().splitlines()[-1]
        self.start_web()
        self.start_worker(probe_km=0)

    def admin(self) -> Any:
        import psycopg
        from sqlalchemy.engine import make_url

        from app.settings import load_settings

        url = make_url(load_settings().db.url).set(drivername="postgresql", database="postgres")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def close(self) -> None:
        for process in (self.worker, self.web):
            if process is not None:
                self.stop(process)
        self.worker = self.web = None
        if self.database is not None:
            try:
                with self.admin() as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            except Exception as error:  # report, never mask the run's own outcome
                say(f"twin: could not drop {self.database}: {error!r}")
        if self.redis_db is not None and self.env.get("REDIS_URL"):  # ours: it was empty when picked
            import redis

            client = redis.Redis.from_url(self.env["REDIS_URL"])
            try:
                client.flushdb()
            finally:
                client.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- processes
    def stop(self, process: Any) -> None:
        """Stop a process we started (by its PID), its output kept in the twin's log."""
        output = process.output()
        process.stop(keep_log=False)
        with self.log.open("a") as out:
            out.write(f"--- {process.name} (pid {process.pid}) output\n{output}\n")

    def node(self, script: str, *, env: Mapping[str, str] | None = None, timeout_s: float = 120) -> str:
        assert self.workdir is not None
        code, output = run_logged(["node", script], log=self.log, env={**self.env, **(env or {})},
                                  cwd=self.workdir, timeout_s=timeout_s)
        if code != 0:
            raise TwinError(f"node {script} exited {code}: {last_lines(output)}")
        return output

    def start_web(self) -> None:
        import httpx

        from scripts.bench.processes import FarmProcess

        self.web = FarmProcess.launch("twin-web", ["node", "src/web.js"], self.env, cwd=self.workdir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.web.popen.poll() is not None:
                raise TwinError(f"twin web exited {self.web.popen.returncode}: "
                                f"{last_lines(self.web.output())}")
            try:
                if httpx.get(f"{self.base_url}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TwinError("the twin's web did not answer /api/v1/health in 30 s")

    def start_worker(self, probe_km: float) -> None:
        from scripts.bench.processes import FarmProcess

        if self.worker is not None:
            self.stop(self.worker)
        env = {**self.env, "GEO_PROBE_KM": f"{probe_km:g}"}
        self.worker = FarmProcess.launch("twin-worker", ["node", "src/worker.js"], env, cwd=self.workdir)
        deadline = time.monotonic() + 30
        while "worker ready" not in self.worker.output():
            if self.worker.popen.poll() is not None or time.monotonic() > deadline:
                raise TwinError(f"the twin's worker did not start: {last_lines(self.worker.output())}")
            time.sleep(0.1)

    def pin_web(self, pinned: bool) -> None:
        from scripts.bench.measure import split_cpus

        web_cpus, _ = split_cpus(False)
        if web_cpus:
            self.web.pin(web_cpus if pinned else set(os.sched_getaffinity(0)))

    # --- benches
    def reset(self) -> None:
        """As run_all.sh between benches: the queue cleaned and idle, then the ride tables emptied."""
        import psycopg

        self.queue("clean")  # drops waiting and delayed jobs; the active ones finish
        self.queue("idle", "60")
        for attempt in range(3):
            try:
                with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
                    conn.execute("TRUNCATE rides, ride_history, offers, bids")
                break
            except psycopg.errors.DeadlockDetected:  # a last step still writing its offers
                if attempt == 2:
                    raise
                time.sleep(1)
        if self.on_idle is not None:
            self.on_idle()

    def queue(self, *command: str) -> None:
        assert self.workdir is not None
        code, output = run_logged(["node", "bench/queue_ctl.js", *command], log=self.log, env=self.env,
                                  cwd=self.workdir, timeout_s=120)
        if code != 0:
            raise TwinError(f"queue_ctl.js {' '.join(command)} exited {code}: {last_lines(output)}")

    def wrk(self, duration_s: int) -> dict[str, Any]:
        from scripts.bench.generators import ensure_wrk
        from scripts.bench.measure import split_cpus

        assert self.workdir is not None
        _, client_cpus = split_cpus(False)

        def pin() -> None:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)

        argv = [ensure_wrk(), "-t1", f"-c{self.params.connections}", f"-d{duration_s}s", "--timeout", "5s",
                "-s", "bench/create_rides.lua", self.base_url]
        code, output = run_logged(argv, log=self.log, env={**self.env, "TOKEN": self.token}, cwd=self.workdir,
                                  timeout_s=duration_s + 60, preexec_fn=pin)
        if code != 0:
            raise TwinError(f"wrk exited {code}: {last_lines(output)}")
        return twin_result(output, "create_rides")

    def paced(self) -> Extracted:
        from scripts.bench.generators import run_paced
        from scripts.bench.harness import BenchError
        from scripts.bench.measure import split_cpus

        _, client_cpus = split_cpus(False)
        city = self.state["city"]
        body = json.dumps({
            "pickup": {"lat": city["lat"], "lng": city["lng"], "address": "bench"},
            "dropoff": {"lat": city["lat"] + 0.02, "lng": city["lng"] + 0.02},
            "vehicleType": self.state["vehicleType"], "region": "tunis", "paymentMethod": "cash",
        }, separators=(",", ":")).encode()
        try:
            result = run_paced(f"{self.base_url}/api/v1/rides", rate=self.params.paced_rate,
                               duration_s=self.params.duration_s, connections=self.params.connections,
                               method="POST", body=body, warmup_s=self.params.warm_up_s, cpus=client_cpus,
                               headers={"Authorization": f"Bearer {self.token}",
                                        "Content-Type": "application/json"})
        except BenchError as error:
            raise TwinError(f"loadgen: {error}") from error
        note = paced_notes(self.params.paced_rate, result.rate, result.errors + result.non_2xx,
                           result.unanswered)
        p99 = result.latency_ms.get("p99", float("nan"))
        return {"p99": p99}, ({"p99": note} if note else {})

    def e2e(self, rate: float, seconds: float) -> dict[str, Any]:
        output = self.node("bench/e2e_latency.js", env={
            "RATE": f"{rate:g}", "DURATION_S": f"{seconds:g}", "DRIVERS_K": str(self.params.offer_drivers),
            "BASE_URL": self.base_url}, timeout_s=seconds + 180)
        return twin_result(output, "e2e_latency")

    def steps(self) -> dict[str, Any]:
        """`step_throughput.js` after an untimed warm-up batch (a freshly started worker's JIT and pools
        would count against the twin: the farm's bench times from its worker's first step)."""
        self.node("bench/step_throughput.js", env={"M": str(STEP_WARM_UP)}, timeout_s=120)
        self.reset()
        output = self.node("bench/step_throughput.js", env={"M": str(self.params.steps)}, timeout_s=300)
        return twin_result(output, "step_throughput")


def run_twin(params: Params, skip: set[str], logdir: Path, run: int) -> SideRun:
    side = SideRun(load=load_average_text())
    say(f"twin, run {run}: load average {side.load}")
    started = time.monotonic()
    twin = TwinSession(params, logdir, run, on_idle=side.note_background)
    side.note_background()

    def attempt(name: str, step: Callable[[], None]) -> None:
        say(f"twin: {name}")
        try:
            step()
        except (TwinError, LookupError, KeyError, ValueError) as error:
            side.failures.append(f"twin {name}: {error}")
        except Exception as error:  # PostgreSQL, Redis, a process: the other benches still run
            side.failures.append(f"twin {name}: {error!r}")

    def rides_with_worker(suffix: str) -> None:
        twin.pin_web(True)
        try:
            twin.reset()
            if "rides-paced" not in skip:
                values, flags = twin.paced()
                side.add(({f"rides_paced_p99{suffix}": values["p99"]},
                          {f"rides_paced_p99{suffix}": flags["p99"]} if flags else {}))
            if "rides-worker" not in skip:
                twin.wrk(params.warm_up_s)
                side.add(extract_twin_create(twin.wrk(params.duration_s), f"rides_worker{suffix}"))
        finally:
            twin.pin_web(False)

    def rides_web_only() -> None:
        twin.pin_web(True)
        try:
            twin.reset()
            twin.queue("pause")
            twin.wrk(params.warm_up_s)
            side.add(extract_twin_create(twin.wrk(params.duration_s), "rides_web"))
        finally:
            twin.queue("resume")
            twin.pin_web(False)

    def offers() -> None:
        twin.reset()
        side.add(extract_twin_e2e(twin.e2e(params.offer_rate, params.offer_s), slow=False))
        if "rss" not in skip:
            side.add(({"rss_web": twin.web.rss_mb(), "rss_worker": twin.worker.rss_mb()}, {}))

    def slow_offers() -> None:
        twin.reset()
        side.add(extract_twin_e2e(twin.e2e(params.slow_rate, params.slow_s), slow=True))

    def steps(key: str) -> None:
        twin.reset()
        side.add(extract_twin_steps(twin.steps(), key))

    try:
        try:
            twin.open()
        except (TwinError, OSError, LookupError) as error:
            side.failures.append(f"the twin could not be set up: {error}")
            return side
        except Exception as error:  # e.g. PostgreSQL or Redis refused: still a side that could not run
            side.failures.append(f"the twin could not be set up: {error!r}")
            return side
        if "rides-web" not in skip:
            attempt("POST /rides, web only (queue paused)", rides_web_only)
        if {"rides-worker", "rides-paced"} - skip:
            attempt("POST /rides with the worker dispatching (5 km search)", lambda: rides_with_worker(""))
        if {"offer-200", "rss"} - skip:
            attempt(f"ride → offer at {params.offer_rate:g}/s", offers)
        if "offer-5" not in skip:
            attempt(f"ride → offer at {params.slow_rate:g}/s", slow_offers)
        if "steps" not in skip:
            attempt("dispatch.step throughput (5 km search)", lambda: steps("steps"))
        if {"steps", "rides-worker", "rides-paced"} - skip:
            attempt("worker restarted with GEO_PROBE_KM=1", lambda: twin.start_worker(probe_km=1))
            if "steps" not in skip:
                attempt("dispatch.step throughput (1 km probe)", lambda: steps("steps_probe"))
            if {"rides-worker", "rides-paced"} - skip:
                attempt("POST /rides with the worker dispatching (1 km probe)",
                        lambda: rides_with_worker("_probe"))
    finally:
        twin.close()
        side.seconds = time.monotonic() - started
    return side


# --- main --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="the farm's benchmarks vs the Node twin's, one table")
    parser.add_argument("--runs", type=int, default=1, help="runs of each side (default 1; medians if more)")
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument("--skip", action="append", default=[], metavar="FIGURE[,FIGURE]",
                        help=f"leave out figures (repeatable, comma-separated): {', '.join(GROUPS)}")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: 3 s runs, 20k drivers, fewer rides, steps and messages")
    parser.add_argument("--logs", type=Path,
                        help="where the benches' output goes (default: a new directory in /tmp)")
    args = parser.parse_args(argv)
    args.skip = {name.strip() for item in args.skip for name in item.split(",") if name.strip()}
    unknown = args.skip - set(GROUPS)
    if unknown:
        parser.error(f"unknown --skip {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    if args.skip >= set(GROUPS):
        parser.error("every figure is skipped")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def report(params: Params, args: argparse.Namespace, farm: list[SideRun], twin: list[SideRun]) -> str:
    figures = [f for f in FIGURES if f.group not in args.skip]
    combined_farm = combine(farm) if farm else None
    combined_twin = combine(twin) if twin else None
    rows, notes = table_rows(figures, params, combined_farm, combined_twin, args.runs)
    lines = [
        "",
        f"Dispatch Farm vs node-twin{' (--quick)' if args.quick else ''}  ·  {params.drivers:,} drivers in a "
        f"{params.box_km:g} km box  ·  {params.connections} connections  ·  {params.duration_s} s runs  ·  "
        f"{args.runs} run(s) per side{', medians' if args.runs > 1 else ''}",
        "ratio > 1 means the farm is better: farm/twin for rates, twin/farm for latencies and memory.",
        "Targets are the farm's. Compare ratios within one sitting: absolute figures move ±35 % between "
        "days.",
        "",
        render_table(rows),
    ]
    if notes:
        lines += ["", "! read with care:"] + [f"  - {note}" for note in notes]
    lines += [
        "",
        "How each side was measured (same machine, one after the other, never at once):",
        f"  POST /rides: one web process pinned to CPU 0, wrk -t1 -c{params.connections} (or loadgen.py, "
        f"paced, {params.warm_up_s} s warm-up) on CPU 1; web only = farm worker stopped / twin queue paused; "
        f"with the worker = it dispatches to the {params.drivers:,} indexed drivers meanwhile (farm: "
        "bench_rides.py --drivers, the paced run first, then wrk). The farm's step probes from 1 km; "
        "the twin's only with GEO_PROBE_KM=1.",
        f"  ride → offer: {params.offer_drivers} drivers near the pickup with a socket each, "
        f"{params.offer_rides:,} rides at {params.offer_rate:g}/s and {params.slow_rides} at "
        f"{params.slow_rate:g}/s; farm from each POST's due time (after a warm-up), twin from just before "
        "each POST is written (no warm-up).",
        f"  dispatch.step: {params.steps:,} queued steps, pickups uniform over the box, one worker process; "
        "farm first-to-last claim stamps, twin resume-to-empty queue.",
        "  RSS: VmRSS of the process tree after the offer run (the farm's worker is Dramatiq's parent + its "
        "worker process).",
    ]
    return "\n".join(lines)


#: Other work above this share of the machine's CPUs before a bench makes its run suspect.
BUSY_PCT = 25.0


def busy_runs(runs: Mapping[str, list[SideRun]], threshold_pct: float = BUSY_PCT) -> list[str]:
    """`side run N: X % busy` for the runs with another session's work on the CPUs before a bench."""
    return [f"{side} run {number}: up to {max(run.background):.0f} % of the CPUs"
            for side, side_runs in runs.items() for number, run in enumerate(side_runs, 1)
            if run.background and max(run.background) > threshold_pct]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    started = time.monotonic()
    logdir = args.logs or Path(tempfile.mkdtemp(prefix="dispatch-farm-compare-"))
    logdir.mkdir(parents=True, exist_ok=True)
    say(f"logs in {logdir}")
    sides = [args.only] if args.only else list(SIDES)
    runs: dict[str, list[SideRun]] = {side: [] for side in sides}
    try:
        for run in range(1, args.runs + 1):
            for side in sides:
                runner = run_farm if side == "farm" else run_twin
                result = runner(params, args.skip, logdir, run)
                runs[side].append(result)
                say(f"{side}, run {run}: {result.seconds:.0f} s; {len(result.values)} figures")
    except KeyboardInterrupt:
        say("interrupted; the table holds what was measured")

    print(report(params, args, runs.get("farm", []), runs.get("twin", [])))
    for side in sides:
        for number, result in enumerate(runs[side], 1):
            print(f"{side} run {number}: load average before {result.load}, {result.seconds:.0f} s"
                  + (f"; CPUs busy with other work before its benches: up to {max(result.background):.0f} %"
                     if result.background else ""))
    busy = busy_runs(runs)
    if busy:
        print(f"NOTE: other work was using the machine ({'; '.join(busy)}): those figures are depressed; "
              "run again on a quiet machine.")
    total = time.monotonic() - started
    print(f"total time {total / 60:.1f} min; logs in {logdir}")

    failures = [(side, n, why) for side in sides for n, r in enumerate(runs[side], 1) for why in r.failures]
    errors = [(side, n, why) for side in sides for n, r in enumerate(runs[side], 1) for why in r.errors]
    missing_runs = [side for side in sides if len(runs[side]) < args.runs]
    for side, number, why in failures:
        print(f"FAILED ({side}, run {number}): {why}", file=sys.stderr)
    for side in missing_runs:
        print(f"FAILED ({side}): only {len(runs[side])} of {args.runs} runs done", file=sys.stderr)
    for side, number, why in errors:
        print(f"ERRORS ({side}, run {number}): {why}", file=sys.stderr)
    if failures or missing_runs:
        return 2
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
