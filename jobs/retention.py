"""`retention.prune`: sent by the clock every `RETENTION_INTERVAL` seconds.

Each batch the service deletes is committed on its own (the job owns the transaction), so a large
backlog never holds one long transaction; what is left past the per-run bound goes next time.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from app.keys import RETENTION_PRUNE
from app.logging import get_logger
from app.services import retention
from jobs.base import JobContext, job

log = get_logger("jobs.retention")


# claim_first=False: it commits batch by batch, so its ledger row is marked done after the last one
# (a run cut short is simply run again; a batch deleted twice deletes nothing).
@job(RETENTION_PRUNE, max_retries=3, time_limit_ms=10 * 60_000, claim_first=False)
def prune(ctx: JobContext) -> None:
    deleted: Counter[str] = Counter()
    for batch in retention.prune(ctx.uow.session, ctx.settings.retention, now=datetime.now(UTC)):
        ctx.uow.commit()
        deleted[batch.table] += batch.deleted
    log.info("retention.pruned", **deleted)
