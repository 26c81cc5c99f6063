"""Which failed jobs a command is about: the filters shared by `farmctl jobs …` and `/admin/jobs/*`.

`args` is "the arguments contain": text found (case-insensitively) anywhere in the job's `args` or
`kwargs` JSON, or — when the value is itself a JSON object or array — JSON containment (`@>`) on
`args` or `kwargs` (`{"rideId": "r-1"}` finds jobs called with that keyword; `["r-1"]` those with
that positional argument).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, or_

from app.errors import ValidationFailed
from models.jobs import FailedJob

_DURATION = re.compile(r"^\s*(\d{1,18})\s*(s|m|h|d|w)\s*\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime | None = None, name: str = "since") -> datetime:
    """`30m`, `2h`, `7d`, `1w` ago, or an ISO 8601 / RFC 3339 moment (UTC when it has no offset);
    `name` is the filter's, for the refusal (`since`, `until`)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    try:
        if match:
            return now - timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(f"{name} must be a duration such as 2h or 7d, or a date-time.",
                               details={name: text}) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def json_document(text: str) -> dict[str, Any] | list[Any] | None:
    """`text` as a JSON object or array, or None when it is anything else (plain text, a scalar)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


@dataclass(frozen=True)
class JobFilter:
    """Which failed jobs a command is about; every field left at None matches all."""

    actor: str | None = None
    queue: str | None = None
    since: datetime | None = None
    #: Only jobs that failed before this moment (the console's "until").
    until: datetime | None = None
    #: Text found (case-insensitively) in the exception's type or message.
    error: str | None = None
    #: True: only jobs replayed at least once; False: only jobs never replayed.
    replayed: bool | None = None
    #: Text in the args/kwargs JSON (case-insensitive), or a JSON object/array they contain.
    args: str | None = None

    def describe(self) -> dict[str, str | bool]:
        """The filters that are set, as JSON-simple values (for the audit log)."""
        found = {"actor": self.actor, "queue": self.queue, "error": self.error, "replayed": self.replayed,
                 "since": self.since.isoformat() if self.since else None,
                 "until": self.until.isoformat() if self.until else None, "args": self.args}
        return {name: value for name, value in found.items() if value is not None}

    def clauses(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.actor:
            where.append(FailedJob.actor == self.actor)
        if self.queue:
            where.append(FailedJob.queue == self.queue)
        if self.since:
            where.append(FailedJob.failed_at >= self.since)
        if self.until:
            where.append(FailedJob.failed_at < self.until)
        if self.error:
            pattern = f"%{escape_like(self.error)}%"
            where.append(or_(FailedJob.exception_type.ilike(pattern, escape="\\"),
                             FailedJob.exception_message.ilike(pattern, escape="\\")))
        if self.replayed is not None:
            where.append(FailedJob.replay_count > 0 if self.replayed else FailedJob.replay_count == 0)
        if self.args:
            where.append(_arguments_contain(self.args))
        return where


def _arguments_contain(text: str) -> ColumnElement[bool]:
    document = json_document(text)
    if document is not None:
        return or_(FailedJob.args.contains(document), FailedJob.kwargs.contains(document))
    pattern = f"%{escape_like(text)}%"
    return or_(cast(FailedJob.args, Text).ilike(pattern, escape="\\"),
               cast(FailedJob.kwargs, Text).ilike(pattern, escape="\\"))
