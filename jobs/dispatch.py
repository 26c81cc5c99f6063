"""`dispatch.step`, `dispatch.check_bids` and `rides.reconcile`: thin wrappers over the service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.keys import DISPATCH_CHECK_BIDS, DISPATCH_STEP, RIDES_RECONCILE
from app.services import dispatch, dispatch_reconcile
from jobs.base import JobContext, job
from workers.resources import get_resources


@job(DISPATCH_STEP, max_retries=8, min_backoff_ms=200, time_limit_ms=30_000,
     claim_first=False)  # a redelivered step re-sends its round's open offers (see dispatch.step)
def step(ctx: JobContext, ride_id: str, round_: int) -> None:
    dispatch.step(
        ctx.uow.session, get_resources().driver_index, ctx.settings.dispatch, uuid.UUID(ride_id),
        int(round_), after_commit=ctx.uow.after_commit, emit=ctx.publisher.emit,
        emit_many=ctx.publisher.emit_many,
    )


@job(DISPATCH_CHECK_BIDS, max_retries=8, min_backoff_ms=200, time_limit_ms=30_000)
def check_bids(ctx: JobContext, ride_id: str, round_: int) -> None:
    dispatch.check_bids(
        ctx.uow.session, ctx.settings.dispatch, uuid.UUID(ride_id), int(round_),
        after_commit=ctx.uow.after_commit, emit=ctx.publisher.emit, twilio=ctx.settings.twilio,
    )


@job(RIDES_RECONCILE, max_retries=3)
def reconcile(ctx: JobContext) -> None:
    dispatch_reconcile.reconcile(ctx.uow.session, ctx.settings, now=datetime.now(UTC))
