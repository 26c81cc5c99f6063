"""Bodies of the admin routes about failed jobs and the audit log (pages of `app/records.py`)."""

from __future__ import annotations

from app.api.schemas import Response
from app.records import AuditEntryOut, FailedJobOut


class FailedJobList(Response):
    items: list[FailedJobOut]
    next_cursor: str | None


class AuditEntryList(Response):
    items: list[AuditEntryOut]
    next_cursor: str | None
