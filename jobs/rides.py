"""`rides.expire_bids` and `rides.expire_hold`: thin wrappers over `app.services.ride_expiry`.

Both are delayed jobs written in the transaction that starts the wait (a round's bid check that
found bids; a card ride's accept) and compare-and-set on the ride: delivered twice, they act once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.keys import RIDES_EXPIRE_BIDS, RIDES_EXPIRE_HOLD
from app.services import ride_expiry
from jobs.base import JobContext, job


@job(RIDES_EXPIRE_BIDS, max_retries=8, min_backoff_ms=200, time_limit_ms=30_000)
def expire_bids(ctx: JobContext, ride_id: str, round_: int) -> None:
    ride_expiry.expire_bids(ctx.uow.session, ctx.settings, uuid.UUID(ride_id), int(round_),
                            now=datetime.now(UTC), after_commit=ctx.uow.after_commit, emit=ctx.publisher.emit)


@job(RIDES_EXPIRE_HOLD, max_retries=8, min_backoff_ms=200, time_limit_ms=30_000)
def expire_hold(ctx: JobContext, ride_id: str) -> None:
    ride_expiry.expire_hold(ctx.uow.session, ctx.settings, uuid.UUID(ride_id), now=datetime.now(UTC),
                            after_commit=ctx.uow.after_commit, emit=ctx.publisher.emit)
