"""py-spy beside a benchmark's measured run: `--profile PATH` (.svg flame graph, .txt, .json).

- `require_py_spy()` finds py-spy or says how to get it;
- `start_profiler()` samples a PID for a fixed time; `wait_for_profile()` waits for it to write,
  `stop_profiler()` asks it to write now (a drain that ends before its time ran out).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from scripts.bench.harness import BenchError, say

PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}


def find_py_spy() -> str | None:
    """py-spy from PATH, or from a `pip install --target /tmp/pyspy py-spy` (kept out of the venv)."""
    found = shutil.which("py-spy")
    if found:
        return found
    fallback = Path("/tmp/pyspy/bin/py-spy")
    return str(fallback) if fallback.exists() else None


def require_py_spy() -> str:
    """py-spy's path, for a run with `--profile` (BenchError when it is not installed)."""
    found = find_py_spy()
    if found is None:
        raise BenchError("--profile needs py-spy: pip install --target /tmp/pyspy py-spy")
    return found


def start_profiler(py_spy: str, pid: int, duration_s: int, out: Path,
                   extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """Sample `pid` with py-spy for `duration_s` into `out` (.svg flame graph, .txt collapsed, .json).

    `extra` adds py-spy options, e.g. `("--gil",)`: only samples of the thread holding the GIL,
    which is where a multi-threaded, CPU-bound process (a Dramatiq worker) spends its CPU.
    """
    fmt = PROFILE_FORMATS.get(out.suffix)
    if fmt is None:
        raise BenchError(f"--profile must end in one of {', '.join(PROFILE_FORMATS)}")
    env = {**os.environ, "PYTHONPATH": str(Path(py_spy).resolve().parents[1])}
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(duration_s),
                             "--format", fmt, "--output", str(out), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_profile(profiler: subprocess.Popen[bytes], out: Path) -> bool:
    """Wait for py-spy to finish its run and write `out`; False (and why, said) when it failed."""
    _, errors = profiler.communicate(timeout=60)
    if profiler.returncode != 0:
        say(f"py-spy exited {profiler.returncode}: {errors.decode(errors='replace')[-500:]}")
        return False
    say(f"profile written to {out}")
    return True


def stop_profiler(profiler: subprocess.Popen[bytes], out: Path) -> None:
    """Make py-spy write `out` now (it does on SIGINT); a profile is a bonus, never a reason to
    leak py-spy, so one that does not finish in a minute is killed."""
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(timeout=60)
        say(f"profile written to {out}")
    except subprocess.TimeoutExpired:
        profiler.kill()
