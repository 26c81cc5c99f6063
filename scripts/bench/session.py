"""A benchmark's run on its private stack: create it, measure, then stop and close all, drop it.

    def main(argv=None) -> int:
        args = parse_args(argv)
        measured = run_on_stack(lambda session: measure(args, session), wrk=True)
        if measured is None:
            return 2  # could not run: the reason was said
        report(args, measured)

`run_on_stack()` finds wrk (and py-spy) before it creates the stack, says a `BenchError` and
answers None instead of raising it; whatever the measurement started through the `BenchSession`
(farm processes, Redis and PostgreSQL clients) is stopped or closed, last first, and the stack is
dropped, however it ended. A process keeps its log when the run failed or `keep_logs` was set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
import redis

from scripts.bench.generators import ensure_wrk
from scripts.bench.harness import BenchError, BenchStack, say
from scripts.bench.processes import FarmProcess, WebProcess, WorkerProcess
from scripts.bench.profiling import require_py_spy

T = TypeVar("T")
P = TypeVar("P", bound=FarmProcess)

#: What every farm process of a bench runs with on top of the stack's settings.
QUIET = {"LOG_LEVEL": "WARNING"}


class BenchSession:
    """The stack a bench measures on and what it opened there, closed by `close()`, last first."""

    def __init__(self, stack: BenchStack, *, wrk: str = "", py_spy: str | None = None) -> None:
        self.stack = stack
        self.wrk = wrk
        self.py_spy = py_spy
        #: Set when a run had errors: the processes still running at the end keep their logs.
        self.keep_logs = False
        self._opened = contextlib.ExitStack()
        self._opened.callback(stack.close)

    def env(self, settings: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a farm process on this stack: its settings, quiet logs, `settings`."""
        return {**self.stack.env, **QUIET, **(settings or {})}

    def adopt(self, process: P) -> P:
        """`process` is stopped at the end (a process stopped before stays as it is)."""
        self._opened.callback(lambda: process.stop(keep_log=self.keep_logs))
        return process

    def start_web(self, settings: Mapping[str, str] | None = None, *, cpus: set[int] | None = None,
                  asgi_app: str | None = None) -> WebProcess:
        """The Procfile's web line on this stack, answering `/ready`, pinned to `cpus` if given."""
        web = self.adopt(WebProcess.start(self.env(settings), asgi_app=asgi_app))
        web.wait_ready()
        if cpus:
            web.pin(cpus)
        return web

    def start_worker(self, settings: Mapping[str, str] | None = None) -> WorkerProcess:
        """The Procfile's worker line on this stack."""
        return self.adopt(WorkerProcess.start(self.env(settings)))

    def redis(self, *, decode_responses: bool = False) -> redis.Redis:
        """A client of the stack's Redis (no prefix: INFO, the whole server), closed at the end."""
        client = redis.Redis.from_url(self.stack.redis_url, decode_responses=decode_responses)
        self._opened.callback(client.close)
        return client

    def postgres(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the stack's database, closed at the end."""
        conn = psycopg.connect(self.stack.libpq_dsn, autocommit=True)
        self._opened.callback(conn.close)
        return conn

    def on_close(self, callback: Callable[[], object]) -> None:
        self._opened.callback(callback)

    def close(self) -> None:
        self._opened.close()


def run_on_stack(measure: Callable[[BenchSession], T], *, wrk: bool = False,
                 py_spy: bool = False) -> T | None:
    """`measure(session)` on a new private stack; None when it could not run (the reason said)."""
    try:
        wrk_path = ensure_wrk() if wrk else ""
        py_spy_path = require_py_spy() if py_spy else None
        stack = BenchStack.create()
    except BenchError as error:
        say(str(error))
        return None
    session = BenchSession(stack, wrk=wrk_path, py_spy=py_spy_path)
    try:
        return measure(session)
    except BenchError as error:
        session.keep_logs = True
        say(str(error))
        return None
    except BaseException:
        session.keep_logs = True
        raise
    finally:
        session.close()
