"""Moments as the API writes them: RFC 3339 in UTC with a `Z` (`2026-12-03T14:31:52.530817Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """`moment` (timezone-aware) in UTC, RFC 3339 with a `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
