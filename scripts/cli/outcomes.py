"""What a command comes to: its exit code, and the one line on stderr when it fails.

Exit codes: 0 done, 1 nothing matched, 2 bad usage, 3 PostgreSQL or Redis unreachable (or the
database not migrated).
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

EXIT_CODES_HELP = ("exit codes: 0 done, 1 nothing matched, 2 bad usage, "
                   "3 PostgreSQL or Redis unreachable (or the database not migrated)")


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


class NothingMatched(Exception):
    """The command found nothing to show or act on (exit 1)."""


def print_error(message: str) -> None:
    print(f"farmctl: {message}", file=sys.stderr)


def first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
