"""structlog set-up shared by every process: JSON in production, readable in development.

Context (`request_id` per request, `message_id`/`actor` per job) is bound with
`structlog.contextvars` by the boundary that owns it, so every event carries it.
"""

from __future__ import annotations

import gc
import logging
import sys

import structlog

from app.settings import LogSettings, take_renamed_variables

_configured = False


def configure_logging(settings: LogSettings, *, process: str) -> None:
    """Route structlog and the standard library's logging through one renderer."""
    global _configured
    level = getattr(logging, settings.level)
    def add_process(_: object, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
        event_dict.setdefault("process", process)
        return event_dict

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_process,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if settings.format == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.EventRenamer("event"),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Servers that install their own handlers (uvicorn) log through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    for noisy in ("uvicorn.access", "apscheduler.executors.default", "apscheduler.scheduler",
                  "engineio.server", "socketio.server", "alembic", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
    for old, new in take_renamed_variables().items():
        get_logger("settings").info("settings.renamed_variable", old=old, new=new)


def freeze_startup_objects() -> None:
    """Move everything allocated at start-up out of the garbage collector's reach.

    A long-lived process keeps its modules, settings and clients for ever; leaving them to the
    cyclic collector makes every full collection walk them again (tens of milliseconds, stalling
    every request in flight). Call once, when start-up is done.
    """
    gc.collect()
    gc.freeze()
    # Young collections every 700 allocations are most of the collector's pauses under load;
    # requests allocate short-lived objects that reference counting frees anyway.
    gc.set_threshold(20_000, 20, 20)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
