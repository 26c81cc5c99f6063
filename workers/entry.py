"""What each Dramatiq worker process loads: `dramatiq workers.entry:setup`."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from app.logging import configure_logging, freeze_startup_objects
from app.settings import get_settings


def setup() -> RedisBroker:
    configure_logging(get_settings().log, process="worker")
    import jobs  # registers every actor on the farm's broker

    freeze_startup_objects()
    return jobs.broker
