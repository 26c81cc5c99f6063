"""`farmctl db upgrade`: create the database if needed and migrate it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.settings import get_settings
from scripts.cli.arguments import command, operator_name
from scripts.cli.connections import database_sessions, unit_of_work
from scripts.cli.outcomes import EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    import sqlalchemy.exc

    from app.services import audit
    from models.migrate import upgrade

    upgrade(get_settings().db.unpooled_url, args.revision)
    print(f"database migrated to {args.revision}")
    try:
        with database_sessions() as sessions, unit_of_work(sessions) as uow:
            audit.record(uow.session, audit.Operator.at_terminal(operator_name(args)), "db.upgraded",
                         target_type="database", details={"revision": args.revision})
    except sqlalchemy.exc.ProgrammingError:  # migrated to a revision older than the audit log's
        print("(not audited: the audit log does not exist at this revision)", file=sys.stderr)
    return EXIT_OK


def add_db_parsers(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    upgrade = command(db, "upgrade", "create the database if needed and migrate it",
                      ["farmctl db upgrade"], cmd_db_upgrade, audited=True)
    upgrade.add_argument("revision", nargs="?", default="head")
