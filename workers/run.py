"""The `worker` process: Dramatiq's CLI with the farm's settings (`python -m workers.run`).

Dramatiq reads its consumer tuning from environment variables at import; they are set here from
the typed settings so there is one place to configure a worker.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys

from app.connection_budget import log_budget
from app.logging import configure_logging
from app.settings import Settings, get_settings


def dramatiq_command(settings: Settings, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """Dramatiq's CLI for `extra`: leading arguments that are not options are actor modules to load
    (Dramatiq takes them only right after the broker), the rest are Dramatiq options."""
    modules = list(itertools.takewhile(lambda arg: not arg.startswith("-"), extra))
    env = dict(os.environ)
    env["dramatiq_worker_timeout"] = str(settings.worker.poll_timeout_ms)
    env["dramatiq_queue_prefetch"] = str(settings.worker.queue_prefetch)
    executable = shutil.which("dramatiq", path=os.path.dirname(sys.executable)) or "dramatiq"
    argv = [
        executable,
        "workers.entry:setup",
        *modules,
        "--processes", str(settings.worker.processes),
        "--threads", str(settings.worker.threads),
        "--worker-shutdown-timeout", str(settings.worker.shutdown_timeout_ms),
        "--skip-logging",
        *extra[len(modules):],
    ]
    return argv, env


def main() -> None:
    settings = get_settings()
    argv, env = dramatiq_command(settings, sys.argv[1:])
    configure_logging(settings.log, process="worker")
    log_budget("worker", settings)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
