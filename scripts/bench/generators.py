"""The load generators a benchmark drives, each in a process of its own, and what they measured.

- `ensure_wrk()` installs wrk with apt-get when it is missing;
- `run_wrk()` runs wrk with a Lua script whose `done` callback prints a `BENCH_RESULT {json}` line
  (`bench_result.lua`); `run_wrk_json()` answers that line whole, for a script that adds to it;
- `run_paced()` runs `loadgen.py` (a fixed request rate, latency from each request's scheduled
  time); `run_generator()` runs another paced generator that prints the same line;
- `add_load_options()` / `check_load_options()`: the flags of a bench that drives both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.harness import REPO, BenchError, say

LOADGEN = Path(__file__).with_name("loadgen.py")

_RESULT = re.compile(r"^BENCH_RESULT (\{.*\})$", re.MULTILINE)


def pinned_to(cpus: set[int] | None) -> Callable[[], None]:
    """A `preexec_fn` that keeps the child on `cpus` (None: wherever the OS puts it)."""
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pin


def bench_result(output: str, generator: str) -> dict[str, Any]:
    """The JSON of the `BENCH_RESULT {json}` line a generator printed."""
    match = _RESULT.search(output)
    if match is None:
        raise BenchError(f"{generator} printed no BENCH_RESULT line:\n{output[-2000:]}")
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def add_load_options(parser: argparse.ArgumentParser, unit: str) -> None:
    """`--duration`, `--connections`, `--threads` (wrk) and `--rate` (`unit`/s), `--paced-connections`."""
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--rate", type=float, default=1000.0, help=f"paced {unit}/s (default 1000)")
    parser.add_argument("--paced-connections", type=int, default=64,
                        help="keep-alive connections of the paced generator (default 64)")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.duration, args.connections, args.threads, args.paced_connections) < 1 or args.rate <= 0:
        parser.error("durations, connections, threads and --rate must be positive")


# --- wrk ------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    """The path to wrk, installing it with apt-get (after an update if the first try fails)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = [*sudo, "apt-get", "install", "-y", "wrk"]
    say("wrk is missing; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"could not install wrk: {done.stderr.strip()[-500:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk was installed but is not on PATH")
    return found


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def rate(self) -> float:
        return self.rps

    @property
    def non_2xx(self) -> int:
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    def latency(self, point: str) -> float:
        """`p50`, `p90`, `p99` or `max`, in ms."""
        return {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "max": self.max_ms}[point]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WrkResult:
        latency = {k: v / 1000 for k, v in data["latency_us"].items()}
        return cls(requests=data["requests"], duration_s=data["duration_us"] / 1e6, errors=data["errors"],
                   p50_ms=latency["p50"], p90_ms=latency["p90"], p99_ms=latency["p99"],
                   max_ms=latency["max"], mean_ms=latency["mean"])

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        return cls.from_json(bench_result(output, "wrk"))


def run_wrk_json(wrk: str, url: str, script: Path, *, duration_s: int, connections: int, threads: int,
                 env: Mapping[str, str], cpus: set[int] | None = None) -> dict[str, Any]:
    """Run wrk with `script` (pinned to `cpus`); the JSON of the line its `done` callback printed."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s",
            "-s", str(script), url]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=duration_s + 120, preexec_fn=pinned_to(cpus))
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    return bench_result(done.stdout, "wrk")


def run_wrk(wrk: str, url: str, script: Path, *, duration_s: int, connections: int, threads: int,
            env: Mapping[str, str], cpus: set[int] | None = None) -> WrkResult:
    return WrkResult.from_json(run_wrk_json(wrk, url, script, duration_s=duration_s,
                                            connections=connections, threads=threads, env=env, cpus=cpus))


# --- paced generators -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PacedResult:
    """What `loadgen.py` measured: latency is from each request's *scheduled* send time."""

    sent: int
    duration_s: float
    statuses: dict[str, int]
    errors: int
    unanswered: int
    late_starts: int
    latency_ms: dict[str, float]
    service_ms: dict[str, float]

    @property
    def rate(self) -> float:
        return self.sent / self.duration_s if self.duration_s else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not code.startswith("2"))

    def latency(self, point: str) -> float:
        """`p50`, `p90`, `p99`, `max`, … in ms (NaN when nothing was answered)."""
        return self.latency_ms.get(point, float("nan"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PacedResult:
        return cls(sent=data["sent"], duration_s=data["duration_s"], statuses=data["statuses"],
                   errors=data["errors"], unanswered=data["unanswered"], late_starts=data["late_starts"],
                   latency_ms=data["latency_ms"],
                   service_ms=data["service_ms"])

    @classmethod
    def parse(cls, output: str) -> PacedResult:
        return cls.from_json(bench_result(output, "loadgen"))


def run_generator(argv: list[str], *, timeout_s: float, cpus: set[int] | None = None) -> dict[str, Any]:
    """Run a paced generator (`loadgen.py` or one built on it, pinned to `cpus`); its JSON line."""
    name = Path(argv[1]).name if len(argv) > 1 else argv[0]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          preexec_fn=pinned_to(cpus))
    if done.returncode != 0:
        raise BenchError(f"{name} exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    return bench_result(done.stdout, name)


def run_paced(url: str, *, rate: float, duration_s: float, connections: int, method: str = "GET",
              headers: Mapping[str, str] | None = None, body: bytes | None = None,
              warmup_s: float = 0.0, cpus: set[int] | None = None) -> PacedResult:
    """Run `loadgen.py` in its own process (pinned to `cpus`) at a fixed rate."""
    argv = [sys.executable, str(LOADGEN), "--url", url, "--rate", str(rate),
            "--duration", str(duration_s), "--connections", str(connections), "--method", method,
            "--warmup", str(warmup_s)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    body_path: Path | None = None
    if body is not None:
        body_path = Path(tempfile.mkstemp(prefix="bench-body-", suffix=".json")[1])
        body_path.write_bytes(body)
        argv += ["--body-file", str(body_path)]
    try:
        data = run_generator(argv, timeout_s=warmup_s + duration_s + 90, cpus=cpus)
    finally:
        if body_path is not None:
            body_path.unlink(missing_ok=True)
    return PacedResult.from_json(data)
