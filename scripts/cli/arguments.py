"""How commands are declared and read their arguments: help with examples, checked values."""

from __future__ import annotations

import argparse
import getpass
import socket
from collections.abc import Callable, Sequence
from typing import Any

from scripts.cli.outcomes import EXIT_CODES_HELP


def command(group: Any, name: str, help_: str, examples: Sequence[str],
            func: Callable[[argparse.Namespace], int], *, audited: bool = False) -> argparse.ArgumentParser:
    """A subcommand; an `audited` one (it changes something) takes `--by` for the audit log."""
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples) + "\n\n" + EXIT_CODES_HELP)
    parser.set_defaults(func=func)
    if audited:
        parser.add_argument("--by", metavar="NAME",
                            help="who runs this, for the audit log (default: user@host)")
    return parser


def operator_name(args: argparse.Namespace) -> str:
    """The operator an audited command names: `--by`, or `user@host` of this terminal."""
    given = getattr(args, "by", None)
    if given and given.strip():
        return str(given).strip()[:200]
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:200]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value
