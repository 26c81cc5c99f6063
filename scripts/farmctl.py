"""`farmctl`: the operator's command line.

Exit codes: 0 done, 1 nothing matched, 2 bad usage, 3 PostgreSQL or Redis unreachable (or the
database not migrated). Each command parses its arguments and calls one service; errors are one
clear line on stderr, never a traceback. The commands live in `scripts.cli`, one module per subject;
this module builds the parser, runs the chosen command and turns its errors into exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import redis
import sqlalchemy.exc

from app.errors import AppError
from app.settings import SettingsError, get_settings
from scripts.cli.accounts import add_drivers_parsers, add_users_parsers
from scripts.cli.audit import add_audit_parser
from scripts.cli.bookings import add_bookings_parsers
from scripts.cli.database import add_db_parsers
from scripts.cli.demo import add_demo_parsers
from scripts.cli.failed_jobs import add_jobs_parsers
from scripts.cli.outcomes import (
    EXIT_CODES_HELP,
    EXIT_NOTHING,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    NothingMatched,
    UsageError,
    first_line,
    print_error,
)
from scripts.cli.queues import add_queues_parser
from scripts.cli.regions import add_regions_parsers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmctl",
        description="Operate a Dispatch Farm: database, users, drivers, regions, bookings, failed jobs, "
                    "queues and the audit log.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  farmctl db upgrade\n  farmctl users create-admin ops@example.com\n"
               "  farmctl jobs failed --since 2h\n  farmctl queues --watch\n\n" + EXIT_CODES_HELP,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at LOG_LEVEL on stderr (default: warnings and errors only)")
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    add_db_parsers(sub)
    add_users_parsers(sub)
    add_regions_parsers(sub)
    add_demo_parsers(sub)
    add_jobs_parsers(sub)
    add_queues_parser(sub)
    add_drivers_parsers(sub)
    add_bookings_parsers(sub)
    add_audit_parser(sub)
    return parser


def _configure_logs(*, verbose: bool) -> None:
    """Logs go to stderr, below WARNING only with --verbose: a command's answer is its own output."""
    import logging

    from app.logging import configure_logging

    settings = get_settings().log
    if not verbose and logging.getLevelName(settings.level) < logging.WARNING:
        settings = dataclasses.replace(settings, level="WARNING")
    configure_logging(settings, process="cli")


#: 128 + SIGPIPE, as a shell reports a writer whose reader closed the pipe.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None, *, configure_logs: bool = True) -> int:
    """Run one command; `configure_logs=False` leaves the process's logging as it is (tests)."""
    try:
        return _run(argv, configure_logs=configure_logs)
    except BrokenPipeError:
        # The reader went away (`farmctl … | head`): the rest of the output goes nowhere, quietly,
        # and the exit status is a shell's for a process killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None, *, configure_logs: bool) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if configure_logs:
            _configure_logs(verbose=args.verbose)
        return int(args.func(args))
    except UsageError as error:
        print_error(str(error))
        return EXIT_USAGE
    except NothingMatched as error:
        print_error(str(error))
        return EXIT_NOTHING
    except SettingsError as error:
        print_error(f"configuration: {error}")
        return EXIT_USAGE
    except AppError as error:
        print_error(f"{error.code}: {error.message}")
        if error.status_code == 503:
            return EXIT_UNAVAILABLE
        return EXIT_NOTHING if error.status_code == 404 else EXIT_USAGE
    except sqlalchemy.exc.ProgrammingError as error:
        if "does not exist" not in str(error.orig):
            raise
        print_error(f"the database is not migrated ({first_line(error)}): run farmctl db upgrade")
        return EXIT_UNAVAILABLE
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        print_error(f"PostgreSQL is unreachable: {first_line(error)}")
        return EXIT_UNAVAILABLE
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        print_error(f"Redis is unreachable: {first_line(error)}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
