"""What the benchmarks measure besides their load generator, and how they print it.

- `split_cpus()`: the server under test on CPU 0, the load generator on the others;
- `MachineCpu` / `CpuMeter`: how busy the machine and given processes were over a window;
- `percentiles()`, `verdict()`, `print_table()`: the figures beside their targets.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from scripts.bench.processes import FarmProcess


# --- machine --------------------------------------------------------------------------------------
def split_cpus(no_pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """CPU 0 for the server under test, the rest for the load generator (None: no pinning)."""
    available = sorted(os.sched_getaffinity(0))
    if no_pin or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


class MachineCpu:
    """How busy all the machine's CPUs were between `start()` and `busy_percent()` (/proc/stat)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    def busy_percent(self) -> float:
        total, idle = self._read()
        spent = total - self._start[0]
        return 100.0 * (1 - (idle - self._start[1]) / spent) if spent else 0.0


class CpuMeter:
    """CPU use of some processes (% of one core) and of the whole machine over a measured window."""

    def __init__(self, processes: Mapping[str, FarmProcess]) -> None:
        self.processes = dict(processes)
        self._start: dict[str, float] = {}
        self._machine: MachineCpu | None = None
        self._started = 0.0
        self.percent: dict[str, float] = {}
        self.machine_busy = 0.0
        self.elapsed_s = 0.0

    def start(self) -> None:
        self._start = {name: process.cpu_seconds() for name, process in self.processes.items()}
        self._machine = MachineCpu()
        self._started = time.monotonic()

    def stop(self) -> None:
        self.elapsed_s = time.monotonic() - self._started
        self.percent = {name: (process.cpu_seconds() - self._start[name]) / self.elapsed_s * 100
                        for name, process in self.processes.items()}
        self.machine_busy = self._machine.busy_percent() if self._machine else 0.0


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def load_average_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


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


Row = tuple[str, str, str, str]


def print_table(title: str, rows: list[Row], notes: list[str] | None = None, *, width: int = 26) -> None:
    """A titled table: name, measured figure, target, verdict."""
    print(f"\n{title}")
    for note in notes or []:
        print(note)
    print(f"\n{'':{width}}{'measured':>20}  {'target':<16}")
    for name, measured, target, mark in rows:
        print(f"{name:{width}}{measured:>20}  {target:<16}{mark}")
