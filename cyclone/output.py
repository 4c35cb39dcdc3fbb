"""Text output of the ``cyclone`` client commands: tables, fields, times, durations."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

__all__ = ["duration", "field_lines", "fields", "first_line", "print_json", "report", "short",
           "table", "table_lines", "when"]


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def report(args: argparse.Namespace, answer: object, text: str) -> int:
    """The server's answer with ``--json``, else ``text``; exit code 0."""
    if args.json:
        print_json(answer)
    else:
        print(text)
    return 0


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    for line in table_lines(headers, rows):
        print(line)


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths,
                                                                  strict=False)),
                       row[-1]]).rstrip() for row in cells]


def fields(rows: Sequence[tuple[str, str]]) -> None:
    for line in field_lines(rows):
        print(line)


def field_lines(rows: Sequence[tuple[str, str]]) -> list[str]:
    """``name  value`` lines, the names padded to the longest."""
    width = max(len(name) for name, _ in rows)
    return [f"{name.ljust(width)}  {value}" for name, value in rows]


def when(iso: object) -> str:
    """An ISO 8601 time as ``YYYY-MM-DD HH:MM:SS`` (as the server gave it, UTC); ``-``
    for none."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(str(iso)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(iso)


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def first_line(text: object) -> str:
    return str(text).splitlines()[0] if text else ""


def short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
