"""`farmctl db upgrade`: create the database if needed and migrate it."""

from __future__ import annotations

import argparse
from typing import Any

from app.settings import get_settings
from scripts.cli.arguments import command
from scripts.cli.outcomes import EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from models.migrate import upgrade

    upgrade(get_settings().db.url, args.revision)
    print(f"database migrated to {args.revision}")
    return EXIT_OK


def add_db_parsers(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    upgrade = command(db, "upgrade", "create the database if needed and migrate it",
                      ["farmctl db upgrade"], cmd_db_upgrade)
    upgrade.add_argument("revision", nargs="?", default="head")
