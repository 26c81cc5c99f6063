"""What the benchmarks measure besides their load generator, and how they print it.

- `split_cpus()`: the server under test on CPU 0, the load generator on the others;
- `MachineCpu` / `CpuMeter`: how busy the machine and given processes (or Redis: `RedisCpu`) were
  over a window; `postgres_cpu()`: every postgres process's CPU;
- `stamp_rates()`: a drain's rate from the rows' own time stamps;
- `percentiles()`, `verdict()`, `fmt_ms()`, `print_table()`: the figures beside their targets.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import redis

from scripts.bench.processes import cpu_ticks


# --- machine --------------------------------------------------------------------------------------
def split_cpus(no_pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """CPU 0 for the server under test, the rest for the load generator (None: no pinning)."""
    available = sorted(os.sched_getaffinity(0))
    if no_pin or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def _proc_stat() -> list[int]:
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


class MachineCpu:
    """How busy all the machine's CPUs were since it was made (/proc/stat)."""

    def __init__(self) -> None:
        self._start = _proc_stat()

    def busy_percent(self) -> float:
        """% of all CPUs' time not idle (idle + iowait count as idle)."""
        now = _proc_stat()
        spent = sum(now) - sum(self._start)
        idle = now[3] + now[4] - self._start[3] - self._start[4]
        return 100.0 * (1 - idle / spent) if spent else 0.0

    def busy_seconds(self) -> float:
        """CPU seconds of all CPUs not idle: user to steal (no guest time counted twice), at USER_HZ."""
        def busy(fields: list[int]) -> float:
            return (sum(fields[:8]) - fields[3] - fields[4]) / 100.0

        return busy(_proc_stat()) - busy(self._start)


class UsesCpu(Protocol):
    def cpu_seconds(self) -> float: ...


class RedisCpu:
    """The Redis server's CPU (INFO cpu: user + system seconds), the whole server's."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class CpuMeter:
    """CPU use of some processes (% of one core) and of the whole machine over a measured window."""

    def __init__(self, processes: Mapping[str, UsesCpu]) -> None:
        self.processes = dict(processes)
        self._start: dict[str, float] = {}
        self._machine: MachineCpu | None = None
        self._started = 0.0
        self.seconds: dict[str, float] = {}
        self.percent: dict[str, float] = {}
        self.machine_busy = 0.0
        self.elapsed_s = 0.0

    def start(self) -> None:
        self._start = {name: process.cpu_seconds() for name, process in self.processes.items()}
        self._machine = MachineCpu()
        self._started = time.monotonic()

    def stop(self, window_s: float | None = None) -> None:
        """The window ends; CPU % are over `window_s` when given (a load generator's own figure)."""
        self.elapsed_s = window_s if window_s is not None else time.monotonic() - self._started
        self.seconds = {name: process.cpu_seconds() - self._start[name]
                        for name, process in self.processes.items()}
        self.percent = {name: spent / self.elapsed_s * 100 for name, spent in self.seconds.items()}
        self.machine_busy = self._machine.busy_percent() if self._machine else 0.0


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
        except OSError:
            continue
        ticks = cpu_ticks(int(entry.name))
        if ticks is not None:
            found[int(entry.name)] = ticks / tick
    return found


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the `postgres` processes used since `before` (a backend that ended meanwhile is lost)."""
    return sum(max(0.0, spent - before.get(pid, 0.0)) for pid, spent in postgres_cpu().items())


def load_average_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def stamp_rates(stamps: list[float]) -> tuple[float, float]:
    """Rows per second from their time stamps (epoch s, in order): first to last, and over the middle
    80 % (no start-up, no tail); zeros for fewer than 10 rows."""
    if len(stamps) < 10:
        return 0.0, 0.0
    first_last = (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9)
    low, high = int(len(stamps) * 0.1), int(len(stamps) * 0.9)
    return first_last, (high - low) / max(stamps[high] - stamps[low], 1e-9)


# --- numbers and tables -------------------------------------------------------------------------------
def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 95, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles (`p50`, `p99`, `p99.9`), plus `max`, `mean` and `count`."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for point in points:
        rank = max(1, math.ceil(point / 100 * len(ordered)))
        out[f"p{point:g}"] = ordered[rank - 1]
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / len(ordered)
    out["count"] = len(ordered)
    return out


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def fmt_ms(value: float) -> str:
    """Milliseconds, or seconds once they stop fitting the column."""
    return f"{value:.1f}" if value < 10_000 else f"{value / 1000:.1f}s"


Row = tuple[str, str, str, str]


def print_table(title: str, rows: list[Row], notes: list[str] | None = None, *, width: int = 26,
                measured_width: int = 20, target_width: int = 16) -> None:
    """A titled table: name, measured figure, target, verdict."""
    print(f"\n{title}")
    for note in notes or []:
        print(note)
    print(f"\n{'':{width}}{'measured':>{measured_width}}  {'target':<{target_width}}")
    for name, measured, target, mark in rows:
        print(f"{name:{width}}{measured:>{measured_width}}  {target:<{target_width}}{mark}")
