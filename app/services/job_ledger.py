"""What the durable job ledger (`jobs`) holds per queue, for `farmctl queues` and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.orm import Session

#: A waiting job due longer ago than this (s) counts as overdue: the relays are not keeping up
#: (or none is running).
OVERDUE_AFTER_S: Final = 5.0

_COUNTS = text("""
SELECT queue,
       count(*) FILTER (WHERE state = 'waiting' AND due_at <= now()) AS due,
       count(*) FILTER (WHERE state = 'waiting' AND due_at > now()) AS later,
       count(*) FILTER (WHERE state = 'handed') AS handed,
       count(*) FILTER (WHERE (state = 'waiting' AND due_at < now() - make_interval(secs => :overdue_s))
                           OR (state = 'handed' AND lease_until < now())) AS overdue,
       COALESCE(EXTRACT(EPOCH FROM now() - min(due_at) FILTER (WHERE state = 'waiting' AND due_at <= now())),
                0) AS oldest_due_s
FROM jobs WHERE state IN ('waiting', 'handed')
GROUP BY queue
""")


@dataclass(frozen=True)
class LedgerCounts:
    queue: str
    #: Waiting and due now (the relay hands them over within moments).
    due: int = 0
    #: Waiting for a later due time (bid checks, retries' backoff, expiries).
    later: int = 0
    #: Handed to Redis, not done yet (queued there, or running).
    handed: int = 0
    #: Due for longer than `OVERDUE_AFTER_S`, or handed and past their lease.
    overdue: int = 0
    #: Seconds since the longest-waiting due job became due.
    oldest_due_s: float = 0.0


def ledger_counts(session: Session, queues: tuple[str, ...] | list[str]) -> dict[str, LedgerCounts]:
    """The live jobs of each queue (one indexed scan of the live rows)."""
    found = {row.queue: LedgerCounts(row.queue, int(row.due), int(row.later), int(row.handed),
                                     int(row.overdue), round(float(row.oldest_due_s), 3))
             for row in session.execute(_COUNTS, {"overdue_s": OVERDUE_AFTER_S})}
    return {queue: found.get(queue, LedgerCounts(queue)) for queue in queues}
