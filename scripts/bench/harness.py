"""What every HTTP benchmark needs: wrk, a private database and Redis prefix, and one web process.

- `ensure_wrk()` installs wrk with apt-get when it is missing.
- `BenchStack` creates `dispatchfarm_bench_<random>` (migrated), a Redis prefix of its own, and
  drops both when it closes, so a benchmark never touches a developer's or a test run's data.
- `WebProcess` starts the Procfile's `web` line (uvicorn, uvloop, httptools, no access log) on a
  free loopback port and stops it by the PID it started.
- `run_wrk()` runs wrk with a Lua script whose `done` callback prints a `BENCH_RESULT {json}` line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy.engine import make_url

from app.settings import load_settings
from models.migrate import drop_database, upgrade

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "Procfile"

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
_RESULT = re.compile(r"^BENCH_RESULT (\{.*\})$", re.MULTILINE)


class BenchError(RuntimeError):
    """The benchmark could not be set up or run (not a slow result: a broken one)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


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
    def non_2xx(self) -> int:
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        match = _RESULT.search(output)
        if match is None:
            raise BenchError(f"wrk printed no BENCH_RESULT line:\n{output[-2000:]}")
        data: dict[str, Any] = json.loads(match.group(1))
        latency = {k: v / 1000 for k, v in data["latency_us"].items()}
        return cls(requests=data["requests"], duration_s=data["duration_us"] / 1e6, errors=data["errors"],
                   p50_ms=latency["p50"], p90_ms=latency["p90"], p99_ms=latency["p99"],
                   max_ms=latency["max"], mean_ms=latency["mean"])


def run_wrk(wrk: str, url: str, script: Path, *, duration_s: int, connections: int, threads: int,
            env: Mapping[str, str], cpus: set[int] | None = None) -> WrkResult:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s",
            "-s", str(script), url]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=duration_s + 60, preexec_fn=pin)
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    return WrkResult.parse(done.stdout)


# --- profiling ----------------------------------------------------------------------------------
PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}


def find_py_spy() -> str | None:
    """py-spy from PATH, or from a `pip install --target /tmp/pyspy py-spy` (kept out of the venv)."""
    found = shutil.which("py-spy")
    if found:
        return found
    fallback = Path("/tmp/pyspy/bin/py-spy")
    return str(fallback) if fallback.exists() else None


def start_profiler(py_spy: str, pid: int, duration_s: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample `pid` with py-spy for `duration_s` into `out` (.svg flame graph, .txt collapsed, .json)."""
    fmt = PROFILE_FORMATS.get(out.suffix)
    if fmt is None:
        raise BenchError(f"--profile must end in one of {', '.join(PROFILE_FORMATS)}")
    env = {**os.environ, "PYTHONPATH": str(Path(py_spy).resolve().parents[1])}
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(duration_s),
                             "--format", fmt, "--output", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# --- database and Redis ---------------------------------------------------------------------------
@dataclass
class BenchStack:
    """A private, migrated database and Redis prefix; `env` points a farm process at them."""

    database_url: str
    redis_url: str
    prefix: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> BenchStack:
        base = load_settings()
        run_id = secrets.token_hex(4)
        url = make_url(base.db.url).set(database=f"dispatchfarm_bench_{run_id}")
        database_url = url.render_as_string(hide_password=False)
        stack = cls(database_url=database_url, redis_url=base.redis.url, prefix=f"bench{run_id}")
        stack.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": base.redis.url,
            "REDIS_PREFIX": stack.prefix,
            "DRAMATIQ_NAMESPACE": f"{stack.prefix}-dramatiq",
        }
        say(f"creating database {url.database} and Redis prefix {stack.prefix}")
        upgrade(database_url)
        return stack

    def close(self) -> None:
        drop_database(self.database_url)
        client = redis.Redis.from_url(self.redis_url)
        try:
            for pattern in (f"{self.prefix}:*", f"{self.prefix}-dramatiq:*"):
                batch = list(client.scan_iter(match=pattern, count=1000))
                if batch:
                    client.delete(*batch)
        finally:
            client.close()


# --- the web process ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def procfile_argv(name: str, env: Mapping[str, str]) -> list[str]:
    """The Procfile's `name` line, with `${VAR:-default}` / `$VAR` expanded as a shell would."""
    for line in PROCFILE.read_text().splitlines():
        key, sep, command = line.partition(":")
        if sep and key.strip() == name:
            break
    else:
        raise BenchError(f"the Procfile has no {name!r} process")

    def value(match: re.Match[str]) -> str:
        current = env.get(match.group(1) or match.group(3), "")
        default = match.group(2)
        return default if default is not None and current == "" else current

    return shlex.split(_VARIABLE.sub(value, command.strip()))


@dataclass
class WebProcess:
    popen: subprocess.Popen[bytes]
    argv: list[str]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def start(cls, env: Mapping[str, str]) -> WebProcess:
        port = free_port()
        bin_dir = os.path.dirname(sys.executable)
        full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "WEB_HOST": "127.0.0.1", "PORT": str(port), "PYTHONUNBUFFERED": "1", **env}
        argv = procfile_argv("web", full_env)
        log_path = Path(tempfile.mkstemp(prefix="bench-web-", suffix=".log")[1])
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(argv, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        say(f"web pid {popen.pid}: {shlex.join(argv)}")
        return cls(popen=popen, argv=argv, base_url=f"http://127.0.0.1:{port}", log_path=log_path)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise BenchError(f"web exited {self.popen.returncode}:\n{self.output()[-3000:]}")
                try:
                    response = client.get("/ready")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    last = repr(error)
                time.sleep(0.1)
        raise BenchError(f"/ready did not answer 200 in {timeout_s:.0f} s ({last}):\n{self.output()[-3000:]}")

    def pin(self, cpus: set[int]) -> None:
        """Keep the web process (every thread) on `cpus`, away from the load generator."""
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpus)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self, grace_s: float = 10.0, *, keep_log: bool = False) -> int | None:
        """SIGTERM the PID we started; SIGKILL it if it outlives `grace_s`."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        if keep_log:
            say(f"web output kept in {self.log_path}")
        else:
            self.log_path.unlink(missing_ok=True)
        return self.popen.returncode
