"""What every HTTP benchmark needs: wrk, a private database and Redis prefix, and one web process.

- `ensure_wrk()` installs wrk with apt-get when it is missing.
- `BenchStack` creates `dispatchfarm_bench_<random>` (migrated), a Redis prefix of its own, and
  drops both when it closes, so a benchmark never touches a developer's or a test run's data.
- `WebProcess` starts the Procfile's `web` line (uvicorn, uvloop, httptools, no access log) on a
  free loopback port and stops it by the PID it started.
- `WorkerProcess` starts the Procfile's `worker` line (Dramatiq forks its worker processes in the
  session we create) and stops it by its PID, then its own process group if anything outlives it.
- `run_wrk()` runs wrk with a Lua script whose `done` callback prints a `BENCH_RESULT {json}` line.
- `run_paced()` runs `loadgen.py` (a fixed request rate, latency from each request's scheduled time).
- `record_result()` appends a bench's figures as one JSON line to `$BENCH_RESULTS` when it is set
  (what `compare.py` reads; without the variable it does nothing).

CPU meters, percentiles and the report table are in `measure.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
import psycopg
import redis
from sqlalchemy.engine import make_url

from app.settings import Settings, load_settings
from models.migrate import drop_database, upgrade

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "Procfile"

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
_RESULT = re.compile(r"^BENCH_RESULT (\{.*\})$", re.MULTILINE)


class BenchError(RuntimeError):
    """The benchmark could not be set up or run (not a slow result: a broken one)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


#: When set, every bench appends its figures to this file as JSON lines (see `record_result`).
RESULTS_ENV = "BENCH_RESULTS"


def record_result(bench: str, figures: Mapping[str, Any]) -> None:
    """Append `{"bench": bench, "figures": figures}` as one JSON line to `$BENCH_RESULTS`, if set.

    Called where a bench prints its table, with the figures the table shows; dataclasses in
    `figures` are turned into dicts. A bench run without the variable writes nothing.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    line = json.dumps({"bench": bench, "figures": figures}, default=plain)
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


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


def busiest(pids: list[int]) -> int:
    """The process of the tree that has used the most CPU (Dramatiq's worker, not its forks' parent
    nor the metrics exporter)."""
    def cpu(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return -1
        return int(fields[11]) + int(fields[12])

    return max(pids, key=cpu)


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
            # One bench customer books thousands of rides a second: per-user write limits and
            # the open-ride cap off (they are measured by the integration tests, not here).
            "RIDES_RATE_LIMIT": "0",
            "WRITES_RATE_LIMIT": "0",
            "LOCATION_RATE_LIMIT": "0",
            "OPEN_RIDES_PER_CUSTOMER": "0",
        }
        say(f"creating database {url.database} and Redis prefix {stack.prefix}")
        upgrade(database_url)
        return stack

    @property
    def libpq_dsn(self) -> str:
        """The database URL as psycopg / libpq take it (no SQLAlchemy driver name)."""
        return make_url(self.database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def settings(self, **overrides: str) -> Settings:
        """The farm's settings as a process started with `env` (plus `overrides`) would load them."""
        return load_settings({**os.environ, **self.env, **overrides})

    def add_region(self, code: str, *, name: str = "Bench", currency: str = "EUR",
                   commission: str = "0.15") -> None:
        with psycopg.connect(self.libpq_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO regions (code, name, currency, commission_rate, updated_at) "
                "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (code) DO NOTHING",
                (code, name, currency, commission),
            )

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


def register_user(base_url: str, role: str = "customer", *, vehicle_type: str | None = None
                  ) -> tuple[str, str]:
    """Register a user through the API; returns `(user_id, access_token)`.

    The web process should run with a high `AUTH_RATE_LIMIT_REQUESTS` when a benchmark registers many.
    """
    body: dict[str, Any] = {
        "email": f"bench-{role}-{secrets.token_hex(6)}@example.com", "password": secrets.token_urlsafe(16),
        "fullName": f"Bench {role.title()}", "phone": "+491701234567", "role": role,
    }
    if vehicle_type:
        body["vehicleType"] = vehicle_type
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=30.0) as client:
        response = client.post("/auth/register", json=body)
    if response.status_code != 201:
        raise BenchError(f"register ({role}) answered {response.status_code}: {response.text[:300]}")
    data = response.json()
    return str(data["user"]["id"]), str(data["accessToken"])


# --- processes ------------------------------------------------------------------------------------
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


def _process_env(env: Mapping[str, str]) -> dict[str, str]:
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": os.path.dirname(bin_dir), "PYTHONUNBUFFERED": "1", **env}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(child) for child in text)
    except OSError:
        pass
    return found


@dataclass
class FarmProcess:
    """A farm process the benchmark started (in a session of its own) and stops by its PID."""

    name: str
    popen: subprocess.Popen[bytes]
    argv: list[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def launch(cls, name: str, argv: list[str], env: Mapping[str, str], *,
               cwd: Path | None = None) -> FarmProcess:
        log_path = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(argv, cwd=cwd or REPO, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        say(f"{name} pid {popen.pid}: {shlex.join(argv)}")
        return cls(name=name, popen=popen, argv=argv, log_path=log_path)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited {self.popen.returncode}:\n{self.output()[-3000:]}")

    def pids(self) -> list[int]:
        """The PID we started and every process it forked (Dramatiq's workers), recursively."""
        tree, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            tree.append(pid)
            queue.extend(_children(pid))
        return tree

    def pin(self, cpus: set[int]) -> None:
        """Keep the process (every thread, every forked child) on `cpus`."""
        for pid in self.pids():
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                pass

    def cpu_seconds(self) -> float:
        """User + system CPU time the process tree has used so far (Linux)."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                continue
        return total

    def stop(self, grace_s: float = 10.0, *, keep_log: bool = False) -> int | None:
        """SIGTERM the PID we started; SIGKILL it and what it forked if they outlive `grace_s`.

        Only PIDs of the tree we started are signalled, each after checking it is still in the
        session we created for it (its group id is our child's PID), so a reused PID is never hit.
        """
        tree = self.pids()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._kill_ours(tree)
                self.popen.wait(timeout=5)
        self._kill_ours(tree[1:])  # whatever it forked must not outlive it
        if keep_log:
            say(f"{self.name} output kept in {self.log_path}")
        else:
            self.log_path.unlink(missing_ok=True)
        return self.popen.returncode

    def _kill_ours(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == self.pid:
                    os.kill(pid, signal.SIGKILL)


@dataclass
class WebProcess(FarmProcess):
    base_url: str = ""

    @classmethod
    def start(cls, env: Mapping[str, str], *, asgi_app: str | None = None) -> WebProcess:
        """The Procfile's `web` line on a free loopback port; `asgi_app` swaps `app.asgi:app` for a
        benchmark's wrapper module (the command line stays the Procfile's otherwise)."""
        port = free_port()
        full_env = _process_env({"WEB_HOST": "127.0.0.1", "PORT": str(port), **env})
        argv = procfile_argv("web", full_env)
        if asgi_app is not None:
            if "app.asgi:app" not in argv:
                raise BenchError("the Procfile's web line does not name app.asgi:app")
            argv = [asgi_app if part == "app.asgi:app" else part for part in argv]
        started = FarmProcess.launch("web", argv, full_env)
        return cls(name="web", popen=started.popen, argv=argv, log_path=started.log_path,
                   base_url=f"http://127.0.0.1:{port}")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    response = client.get("/ready")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    last = repr(error)
                time.sleep(0.1)
        raise BenchError(f"/ready did not answer 200 in {timeout_s:.0f} s ({last}):\n{self.output()[-3000:]}")


@dataclass
class WorkerProcess(FarmProcess):
    @classmethod
    def start(cls, env: Mapping[str, str]) -> WorkerProcess:
        """The Procfile's `worker` line (`python -m workers.run`, which execs Dramatiq's CLI)."""
        full_env = _process_env(env)
        argv = procfile_argv("worker", full_env)
        if argv and argv[0] == "python":
            argv[0] = sys.executable  # the virtualenv's interpreter, as PATH would pick it
        started = FarmProcess.launch("worker", argv, full_env)
        return cls(name="worker", popen=started.popen, argv=argv, log_path=started.log_path)


# --- the paced load generator -------------------------------------------------------------------------
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

    @classmethod
    def parse(cls, output: str) -> PacedResult:
        match = _RESULT.search(output)
        if match is None:
            raise BenchError(f"loadgen printed no BENCH_RESULT line:\n{output[-2000:]}")
        data: dict[str, Any] = json.loads(match.group(1))
        return cls(sent=data["sent"], duration_s=data["duration_s"], statuses=data["statuses"],
                   errors=data["errors"], unanswered=data["unanswered"], late_starts=data["late_starts"],
                   latency_ms=data["latency_ms"],
                   service_ms=data["service_ms"])


def run_paced(url: str, *, rate: float, duration_s: float, connections: int, method: str = "GET",
              headers: Mapping[str, str] | None = None, body: bytes | None = None,
              warmup_s: float = 0.0, cpus: set[int] | None = None) -> PacedResult:
    """Run `loadgen.py` in its own process (pinned to `cpus`) at a fixed rate."""
    argv = [sys.executable, str(Path(__file__).with_name("loadgen.py")), "--url", url, "--rate", str(rate),
            "--duration", str(duration_s), "--connections", str(connections), "--method", method,
            "--warmup", str(warmup_s)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    body_path: Path | None = None
    if body is not None:
        body_path = Path(tempfile.mkstemp(prefix="bench-body-", suffix=".json")[1])
        body_path.write_bytes(body)
        argv += ["--body-file", str(body_path)]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              timeout=warmup_s + duration_s + 90, preexec_fn=pin)
    finally:
        if body_path is not None:
            body_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise BenchError(f"loadgen exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    return PacedResult.parse(done.stdout)
