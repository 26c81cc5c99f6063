"""Retention: delete the rows nobody needs any more, a bounded batch at a time (`retention.prune`).

Each rule names a table, the column that ages its rows, what else a row must be to go, and the
setting that says how many days it is kept (0 = forever). To prune one more table, add one line
to `RULES` (and its `*_days` field to `RetentionSettings`).

| table           | a row goes when                                                  | default   |
| --------------- | ---------------------------------------------------------------- | --------- |
| `offers`        | made more than N days ago, for a ride in a final state           | 30 days   |
| `notifications` | written more than N days ago and done with (sent or later)       | 30 days   |
| `stripe_events` | handled more than N days ago                                     | 30 days   |
| `ride_history`  | its ride finished (final, last changed) more than N days ago     | kept      |

Ride history is shown by the API (`history[]`) and is the record of who moved a ride when, which
disputes and chargebacks need: it is kept unless `RETENTION_RIDE_HISTORY_DAYS` asks otherwise.
Done jobs of the ledger are pruned continuously by the relays (`LEDGER_DONE_RETENTION`), failed
ones stay (a `failed_jobs` row points at them); `failed_jobs` (and their replays),
`ledger_entries` (append-only money) and `audit_log` are never pruned (`KEPT`).

**Bounded.** A run deletes at most `max_rows_per_run` rows per table, `batch_size` per statement:
`DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... LIMIT n FOR UPDATE SKIP LOCKED))` (a TID scan;
rows someone is changing are skipped, the rest locked, so their ctid holds until the delete).
`prune` yields after each batch and the caller commits it, so no transaction holds more than one
batch; a bigger backlog goes over the next runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, TextClause, text
from sqlalchemy.orm import Session

from app.settings import RetentionSettings
from models.ride_states import FINAL

_FINAL_RIDE: Final = "r.status IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(FINAL)))


@dataclass(frozen=True)
class Rule:
    """Rows of `table` whose `age_column` is older than `days(settings)` days and meet `condition`.

    `condition` is SQL over the table's own columns (qualify them with the table name inside a
    subquery); it may use the bind parameter `:cutoff`.
    """

    table: str
    age_column: str
    condition: str
    days: Callable[[RetentionSettings], int]


RULES: Final[tuple[Rule, ...]] = (
    Rule("offers", "created_at",
         f"EXISTS (SELECT 1 FROM rides r WHERE r.id = offers.ride_id AND {_FINAL_RIDE})",
         lambda s: s.offers_days),
    Rule("notifications", "created_at", "status IN ('sent', 'delivered', 'failed', 'undelivered', 'skipped')",
         lambda s: s.notifications_days),
    Rule("stripe_events", "processed_at", "processed_at IS NOT NULL", lambda s: s.stripe_events_days),
    Rule("ride_history", "at",
         "EXISTS (SELECT 1 FROM rides r WHERE r.id = ride_history.ride_id AND "
         f"{_FINAL_RIDE} AND r.updated_at < :cutoff)",
         lambda s: s.ride_history_days),
)

#: Tables no rule may name: the durable record of failures, money and admin actions.
KEPT: Final = frozenset({"failed_jobs", "failed_job_replays", "ledger_entries", "audit_log"})


@dataclass(frozen=True)
class Batch:
    """One statement's work: `deleted` rows of `table`."""

    table: str
    deleted: int


def prune(session: Session, settings: RetentionSettings, *, now: datetime,
          rules: tuple[Rule, ...] = RULES) -> Iterator[Batch]:
    """Delete what `rules` no longer keep, one batch at a time; commit after each one yielded."""
    for rule in rules:
        days = rule.days(settings)
        if days <= 0 or rule.table in KEPT:
            continue
        cutoff = now - timedelta(days=days)
        left = settings.max_rows_per_run
        while left > 0:
            size = min(settings.batch_size, left)
            deleted = _delete_batch(session, rule, cutoff, size)
            left -= deleted
            yield Batch(rule.table, deleted)
            if deleted < size:
                break


def batch_delete(rule: Rule) -> TextClause:
    """The statement deleting one batch of `rule` (binds `:cutoff` and `:size`)."""
    return text(f"""
        DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {rule.table}
            WHERE {rule.age_column} < :cutoff AND ({rule.condition})
            LIMIT :size
            FOR UPDATE SKIP LOCKED
        ))""")


def _delete_batch(session: Session, rule: Rule, cutoff: datetime, size: int) -> int:
    result = session.execute(batch_delete(rule), {"cutoff": cutoff, "size": size})
    return cast(CursorResult[Any], result).rowcount or 0
