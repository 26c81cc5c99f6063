"""`drivers.prune_stale`: sent by the clock every `DRIVER_PRUNE_INTERVAL` seconds."""

from __future__ import annotations

from datetime import UTC, datetime

from app.keys import DRIVERS_PRUNE_STALE
from app.services import stale_drivers
from jobs.base import JobContext, job
from workers.resources import get_resources


@job(DRIVERS_PRUNE_STALE, max_retries=3)
def prune_stale(ctx: JobContext) -> None:
    stale_drivers.prune_stale(ctx.uow.session, get_resources().driver_index, ctx.settings.dispatch,
                              now=datetime.now(UTC), after_commit=ctx.uow.after_commit,
                              publisher=ctx.publisher)
