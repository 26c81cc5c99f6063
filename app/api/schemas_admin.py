"""Bodies of the admin routes about failed jobs and the audit log (pages of `app/records.py`)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from app.api.schemas import Request, Response
from app.records import AuditEntryOut, FailedJobOut
from app.services.failed_job_filter import JobFilter, parse_since
from app.services.failed_jobs import ReplayOutcome
from app.services.failed_jobs_admin import JobDetail
from app.timestamps import rfc3339


class FailedJobList(Response):
    items: list[FailedJobOut]
    next_cursor: str | None


class AuditEntryList(Response):
    items: list[AuditEntryOut]
    next_cursor: str | None


# --- /admin/jobs/* ------------------------------------------------------------------------------
def job_filter(*, actor: str | None = None, queue: str | None = None, since: str | None = None,
               until: str | None = None, error: str | None = None, args: str | None = None,
               replayed: bool | None = None) -> JobFilter:
    """The registry's filter from the API's values (an empty text filters nothing)."""
    return JobFilter(actor=actor or None, queue=queue or None, since=parse_since(since) if since else None,
                     until=parse_since(until, name="until") if until else None,
                     error=error or None, args=args or None, replayed=replayed)


class FailedJobFiltersIn(Request):
    """The filters of `GET /admin/jobs/failed`, as a body; every one left out matches all."""

    actor: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    queue: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    since: Annotated[str, msgspec.Meta(max_length=64,
                                       description="2h, 7d, … or an RFC 3339 time")] | None = None
    until: Annotated[str, msgspec.Meta(max_length=64, description="failed before: 2h (ago), 7d, … or an "
                                                                  "RFC 3339 time")] | None = None
    error: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    args: Annotated[str, msgspec.Meta(
        max_length=1000, description="text in the args/kwargs JSON, or a JSON object/array they contain",
    )] | None = None
    replayed: bool | None = None

    def where(self) -> JobFilter:
        return job_filter(actor=self.actor, queue=self.queue, since=self.since, until=self.until,
                          error=self.error, args=self.args, replayed=self.replayed)


class ReplayIn(Request):
    #: Replay a job that was replayed before too.
    force: bool = False


class ReplayMatchingIn(Request):
    #: How many jobs the operator saw matching (`GET /admin/jobs/failed/count`); 409 if not so.
    expect: Annotated[int, msgspec.Meta(ge=0)]
    filters: FailedJobFiltersIn = msgspec.field(default_factory=FailedJobFiltersIn)
    force: bool = False


class PurgeMatchingIn(Request):
    expect: Annotated[int, msgspec.Meta(ge=0)]
    filters: FailedJobFiltersIn = msgspec.field(default_factory=FailedJobFiltersIn)


class FailedJobCount(Response):
    count: int


class FailedJobReplayOut(Response):
    message_id: str
    at: str
    by: str
    forced: bool
    #: The failed job recorded for this replay, if it failed again.
    failed_again_job_id: uuid.UUID | None


class FailedJobDetailOut(FailedJobOut):
    """A failed job with its full traceback and every replay, oldest first."""

    traceback: str | None
    replays: list[FailedJobReplayOut]

    @classmethod
    def of_detail(cls, found: JobDetail) -> FailedJobDetailOut:
        again = found.failed_again
        replays = [FailedJobReplayOut(message_id=r.message_id, at=rfc3339(r.replayed_at), by=r.replayed_by,
                                      forced=r.forced, failed_again_job_id=again.get(r.message_id))
                   for r in found.replays]
        return cls(**cls.fields_of(found.job), traceback=found.job.traceback or None, replays=replays)


class ReplayResultOut(Response):
    id: uuid.UUID
    replayed: bool
    #: The new message's id (None when skipped).
    message_id: str | None
    #: Why it was not replayed (None when it was).
    skipped: str | None

    @classmethod
    def of(cls, outcome: ReplayOutcome) -> ReplayResultOut:
        return cls(id=outcome.job.id, replayed=outcome.message_id is not None, message_id=outcome.message_id,
                   skipped=outcome.skipped)


class ReplayMatchingOut(Response):
    replayed: int
    skipped: int
    items: list[ReplayResultOut]


class PurgeOut(Response):
    purged: int
