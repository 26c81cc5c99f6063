"""How commands are declared and read their arguments: help with examples, checked values."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from scripts.cli.outcomes import EXIT_CODES_HELP


def command(group: Any, name: str, help_: str, examples: Sequence[str],
            func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples) + "\n\n" + EXIT_CODES_HELP)
    parser.set_defaults(func=func)
    return parser


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
