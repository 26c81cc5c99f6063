"""The farm as real processes: web, worker and clock started from the Procfile's own command lines.

Each process is started in a session of its own (so Dramatiq's forked worker processes can be
reached through the PID we started), writes its output to a file, and is stopped by that PID:
SIGTERM first, SIGKILL to its process group if it has not exited after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
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

import httpx

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "Procfile"
FARM_PROCESSES = ("web", "worker", "clock")

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


class FarmError(RuntimeError):
    """The farm did not start or answer in time (the message carries every process's output)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def procfile_commands(path: Path = PROCFILE) -> dict[str, str]:
    commands: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, command = line.split(":", 1)
        commands[name.strip()] = command.strip()
    return commands


def expand(command: str, env: Mapping[str, str]) -> list[str]:
    """`${NAME:-default}`, `${NAME}` and `$NAME` as a shell would expand them, then split."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        current = env.get(name, "")
        if default is not None and current == "":
            return default
        return current

    return shlex.split(_VARIABLE.sub(value, command))


@dataclass
class FarmProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM the PID we started; SIGKILL its process group if it outlives `grace_s`."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(timeout=5)
        else:
            # The leader is gone; make sure nothing it forked (Dramatiq's workers) outlives it.
            self._kill_group()
        return self.popen.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # the group we created: pgid == our child's PID


@dataclass
class Farm:
    """web + worker + clock on a free loopback port."""

    base_url: str
    processes: list[FarmProcess] = field(default_factory=list)
    log_dir: Path | None = None
    #: Set when a test using the farm failed: its logs are kept for reading.
    keep_logs: bool = False

    @classmethod
    def start(cls, overrides: Mapping[str, str], names: tuple[str, ...] = FARM_PROCESSES) -> Farm:
        port = free_port()
        bin_dir = os.path.dirname(sys.executable)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": os.path.dirname(bin_dir),
            "WEB_HOST": "127.0.0.1",
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }
        log_dir = Path(tempfile.mkdtemp(prefix="farm-e2e-"))
        farm = cls(base_url=f"http://127.0.0.1:{port}", log_dir=log_dir)
        commands = procfile_commands()
        try:
            for name in names:
                argv = expand(commands[name], env)
                log_path = log_dir / f"{name}.log"
                with log_path.open("wb") as log_file:
                    popen = subprocess.Popen(
                        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                farm.processes.append(FarmProcess(name, argv, popen, log_path))
        except BaseException:
            farm.stop()
            raise
        return farm

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll `GET /ready` until it answers 200; fail early if a process exits."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                exited = [p for p in self.processes if p.popen.poll() is not None]
                if exited:
                    names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in exited)
                    self.keep_logs = True
                    raise FarmError(f"farm process exited during start-up: {names}\n{self.output()}")
                try:
                    response = client.get("/ready")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    last = repr(error)
                time.sleep(0.1)
        self.keep_logs = True
        raise FarmError(f"GET /ready did not answer 200 within {timeout_s:.0f} s (last: {last})\n"
                        f"{self.output()}")

    def process(self, name: str) -> FarmProcess:
        return next(p for p in self.processes if p.name == name)

    def output(self) -> str:
        parts = []
        for process in self.processes:
            state = "running" if process.popen.poll() is None else f"exit {process.popen.returncode}"
            parts.append(f"----- {process.name} (pid {process.pid}, {state}): {shlex.join(process.argv)}\n"
                         f"{process.output()}")
        return "\n".join(parts)

    def stop(self, grace_s: float = 10.0) -> dict[str, int | None]:
        """Stop every process we started (clock first, web last); returns their exit codes."""
        codes: dict[str, int | None] = {}
        for process in reversed(self.processes):
            codes[process.name] = process.stop(grace_s)
        if self.log_dir is not None and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return codes
