"""The farm's processes a benchmark starts, as the Procfile runs them, and stops by the PIDs it started.

- `WebProcess` starts the Procfile's `web` line (uvicorn, uvloop, httptools, no access log) on a
  free loopback port;
- `WorkerProcess` starts the Procfile's `worker` line (Dramatiq forks its worker processes in the
  session we create);
- `FarmProcess.stop()` signals only the tree it started, then its own process group if anything
  outlives it; a second call does nothing;
- `wait_until()` polls a condition while a process must stay alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scripts.bench.harness import REPO, BenchError, say

PROCFILE = REPO / "Procfile"

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of `pid` so far, in clock ticks (None: the process is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def busiest(pids: list[int]) -> int:
    """The process of the tree that has used the most CPU (Dramatiq's worker, not its forks' parent
    nor the metrics exporter)."""
    def used(pid: int) -> int:
        ticks = cpu_ticks(pid)
        return -1 if ticks is None else ticks

    return max(pids, key=used)


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
    stopped: bool = field(default=False, init=False, repr=False)

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
        ticks = (cpu_ticks(pid) for pid in self.pids())
        return sum(t for t in ticks if t is not None) / os.sysconf("SC_CLK_TCK")

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
        A process already stopped is left as it is.
        """
        if self.stopped:
            return self.popen.returncode
        self.stopped = True
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


def wait_until(ready: Callable[[], bool], *, timeout_s: float, process: FarmProcess,
               poll_s: float = 0.05) -> bool:
    """Poll `ready` every `poll_s` until it holds (True) or `timeout_s` passed (False); `process`
    must stay alive meanwhile (`BenchError` with its output when it exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        process.check_alive()
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


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
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:

            def ready() -> bool:
                nonlocal last
                try:
                    response = client.get("/ready")
                except httpx.TransportError as error:
                    last = repr(error)
                    return False
                last = f"{response.status_code} {response.text[:200]}"
                return response.status_code == 200

            if wait_until(ready, timeout_s=timeout_s, process=self, poll_s=0.1):
                return
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
