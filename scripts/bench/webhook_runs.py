"""One run of `bench_webhooks.py` (`Phase`: what was sent, answered and used) and its checks
against PostgreSQL afterwards (`check_stored`): every event sent is stored exactly once with exactly
one `payments.handle_event` outbox row, and the number stored equals the 200 `duplicate: false`
answers (plus the requests the load generator had in flight when it stopped, which it never reads
the answers of).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from scripts.bench.generators import PacedResult, WrkResult
from scripts.bench.stripe_events import EventMaker


@dataclass
class Phase:
    label: str
    kind: str  # "paced" or "wrk"
    expect: str  # "new", "duplicate" or "400"
    tag: str = ""
    wrk: WrkResult | None = None
    paced: PacedResult | None = None
    answers: dict[str, int] = field(default_factory=dict)
    sent_ids: set[str] = field(default_factory=set)
    #: Requests the load generator sent (more than `sent_ids` when wrk ran out of events and repeated).
    requests_sent: int = 0
    wrapped: int = 0
    web_cpu_pct: float = 0.0
    web_cpu_s: float = 0.0
    worker_cpu_pct: float = 0.0
    pg_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0
    load: str = ""
    check: str = ""
    check_ok: bool = True

    @property
    def measured(self) -> bool:
        return self.label != "warm-up"

    @property
    def web_cpu_per_request_us(self) -> float:
        """Web CPU per answered request (the paced window includes its warm-up's requests)."""
        return self.web_cpu_s / max(1, sum(self.answers.values())) * 1e6

    @property
    def wrong_answers(self) -> int:
        """Answers other than the run expects (a replayed event answering `duplicate: false` counts)."""
        a = self.answers
        if self.expect == "400":
            return sum(n for k, n in a.items() if k != "bad_request")
        wrong = sum(n for k, n in a.items() if k not in ("new", "duplicate"))
        return wrong + (a.get("new", 0) if self.expect == "duplicate" else 0)

    @property
    def errors(self) -> int:
        if self.wrk is not None:
            return self.wrk.socket_errors + self.wrong_answers
        if self.paced is not None:
            return self.paced.errors + self.wrong_answers
        return self.wrong_answers

    @property
    def non_2xx(self) -> int:
        if self.wrk is not None:
            return self.wrk.non_2xx
        return self.paced.non_2xx if self.paced is not None else 0

    @property
    def rate(self) -> float:
        return self.result.rate

    @property
    def result(self) -> WrkResult | PacedResult:
        found = self.wrk or self.paced
        assert found is not None
        return found

    def latency(self, point: str) -> float:
        return self.result.latency(point)


def unanswered(phase: Phase) -> int:
    """Requests still unanswered when the load generator stopped (wrk never reads the answers in
    flight at its end): each may be stored too."""
    return max(0, phase.requests_sent - sum(phase.answers.values()))


def check_run(conn: psycopg.Connection[Any], prefix: str, phase: Phase, replays: list[Phase], *,
              outbox_kept: bool) -> None:
    """Stored ids == ids sent, one outbox row each; stored == 200 `duplicate: false` (a 400 run:
    nothing stored)."""
    stored = {row[0] for row in conn.execute(
        "SELECT id FROM stripe_events WHERE id LIKE %s", (prefix + "%",))}
    outbox: dict[str, int] = dict(conn.execute(
        "SELECT args->>0, count(*) FROM jobs WHERE actor = 'payments.handle_event' "
        "AND args->>0 LIKE %s GROUP BY 1", (prefix + "%",)).fetchall())
    new = phase.answers.get("new", 0)
    new_on_replay = sum(p.answers.get("new", 0) for p in replays)
    if phase.expect == "400":
        phase.check_ok = not stored and not outbox
        phase.check = f"{len(stored)} stored, {sum(outbox.values())} outbox rows (expected none)"
        return
    missing, extra = phase.sent_ids - stored, stored - phase.sent_ids
    # each event answers `duplicate: false` once; a request still unanswered may be stored too
    late = unanswered(phase)
    doubled = sum(1 for n in outbox.values() if n != 1)
    ok = not missing and not extra and new_on_replay == 0
    ok = ok and new <= len(stored) <= new + late
    if outbox_kept:
        ok = ok and set(outbox) == stored and not doubled
    phase.check_ok = ok
    phase.check = (
        f"sent {len(phase.sent_ids):,}, answered 200 new {new:,}"
        + (f" (+ {late} unanswered at the generator's stop)" if late else "")
        + f"; stored {len(stored):,} ({len(missing)} missing, {len(extra)} extra); "
        + (f"outbox rows {sum(outbox.values()):,} ({doubled} ids not exactly once)" if outbox_kept
           else "outbox: relayed by the worker")
        + (f"; replay answered {sum(p.answers.get('duplicate', 0) for p in replays):,} duplicate, "
           f"{new_on_replay} new" if replays else ""))


def check_stored(conn: psycopg.Connection[Any], maker: EventMaker, phases: list[Phase], *,
                 outbox_kept: bool) -> Phase:
    """Check each run (`check_run`; a replay with its run of new events); the totals over all runs
    as a phase of their own. `outbox_kept`: no worker ran (the relay deletes the rows it moves)."""
    for phase in phases:
        if phase.label.startswith("replayed"):
            continue  # checked with its run of new events
        replays = [p for p in phases if p.tag == phase.tag and p.label.startswith("replayed")]
        check_run(conn, maker.prefix(phase.tag), phase, replays, outbox_kept=outbox_kept)

    rows = conn.execute("SELECT count(*) FROM stripe_events").fetchone()
    outbox_rows = conn.execute("SELECT count(*), count(DISTINCT args->>0) FROM jobs "
                               "WHERE actor = 'payments.handle_event'").fetchone()
    assert rows is not None and outbox_rows is not None
    new = sum(p.answers.get("new", 0) for p in phases)
    late = sum(unanswered(p) for p in phases if p.expect == "new")
    total = Phase("all runs", "sum", "new")
    total.check_ok = new <= rows[0] <= new + late and (
        not outbox_kept or outbox_rows[0] == outbox_rows[1] == rows[0])
    total.check = (f"stripe_events rows {rows[0]:,}; 200 duplicate=false answers {new:,} "
                   f"(+ {late} unanswered); payments.handle_event outbox rows "
                   + (f"{outbox_rows[0]:,} for {outbox_rows[1]:,} distinct events" if outbox_kept
                      else "relayed by the worker"))
    return total
