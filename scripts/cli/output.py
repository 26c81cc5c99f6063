"""What commands print: times and ages, aligned tables, JSON lines, a progress bar on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def one_line(text: str, width: int) -> str:
    lines = text.strip().splitlines() or [""]
    line = lines[0] + (" …" if len(lines) > 1 else "")
    return line if len(line) <= width else line[:max(1, width - 1)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
          last_width: int | None = None) -> list[str]:
    """Aligned columns (numbers in `right` right-aligned); the last column is cut at `last_width`."""
    if last_width is not None:
        rows = [[*row[:-1], one_line(row[-1], last_width)] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def json_line(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


class Progress:
    """A progress bar on stderr for long runs, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = total > 1 and sys.stderr.isatty()
        self._drawn_at = 0.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at > 0.1 or self.done == self.total):
            self._drawn_at = now
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def say(self, line: str) -> None:
        """Print a line on stdout without tearing the bar."""
        if self.enabled:
            sys.stderr.write("\r\033[K")
        print(line, flush=self.enabled)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
