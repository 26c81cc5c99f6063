"""`tokens.cleanup`: sent by the clock every `TOKENS_CLEANUP_INTERVAL` seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.keys import TOKENS_CLEANUP
from app.logging import get_logger
from app.services.tokens import purge_expired
from jobs.base import JobContext, job

log = get_logger("jobs.tokens")


@job(TOKENS_CLEANUP, max_retries=3)
def cleanup(ctx: JobContext) -> None:
    report = purge_expired(
        ctx.uow.session,
        now=datetime.now(UTC),
        retention=timedelta(seconds=ctx.settings.auth.token_retention_s),
    )
    log.info("tokens.cleaned_up", refresh_tokens=report.refresh_tokens,
             revoked_sessions=report.revoked_sessions)
