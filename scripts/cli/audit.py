"""`farmctl audit`: read the audit log (who suspended, refunded, replayed, purged, changed what)."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from scripts.cli import output
from scripts.cli.arguments import command, positive
from scripts.cli.connections import database_sessions
from scripts.cli.outcomes import EXIT_OK, NothingMatched, UsageError


def _actor_id(text: str | None) -> uuid.UUID | None:
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise UsageError(f"--actor-id must be an account id (a UUID), got {text!r}") from error


def cmd_audit(args: argparse.Namespace) -> int:
    from app.records import AuditEntryOut
    from app.services import audit
    from app.services.failed_jobs import parse_since

    where = audit.AuditFilter(action=args.action, actor_id=_actor_id(args.actor_id), operator=args.operator,
                              target_type=args.target_type, target_id=args.target,
                              since=parse_since(args.since) if args.since else None)
    with database_sessions() as sessions, sessions() as session:
        rows, _ = audit.list_entries(session, where, limit=args.limit)
    if not rows:
        raise NothingMatched("no audit entry matches")
    if args.json:
        for row in rows:
            print(output.json_line(AuditEntryOut.of(row)))
        return EXIT_OK
    table = [[str(row.id), output.when(row.at), row.action, row.operator or row.actor_role,
              f"{row.target_type}:{row.target_id}" if row.target_type else "-",
              json.dumps(row.details, sort_keys=True, default=str)] for row in rows]
    print("\n".join(output.table(["ID", "AT (UTC)", "ACTION", "BY", "TARGET", "DETAILS"], table,
                                 right={0}, last_width=80)))
    return EXIT_OK


def add_audit_parser(sub: Any) -> None:
    parser = command(sub, "audit", "the audit log, newest first: admin and operator actions, with who", [
        "farmctl audit --since 1d", "farmctl audit --action driver. --json",
        "farmctl audit --target 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
    ], cmd_audit)
    parser.add_argument("--action", help="an action (driver.suspended) or a prefix ending in '.' (jobs.)")
    parser.add_argument("--operator", help="text in the operator's name (an email, or farmctl's --by)")
    parser.add_argument("--actor-id", help="the acting admin account's id")
    parser.add_argument("--target-type", help="ride, user, region, failed_job, queue, database")
    parser.add_argument("--target", help="the target's id (a ride id, a user id, a region code, …)")
    parser.add_argument("--since", help="30m, 2h, 7d, 1w, or a date-time (2026-01-31T12:00Z)")
    parser.add_argument("--limit", type=positive, default=50, help="at most N entries (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (camelCase)")
