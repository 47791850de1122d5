"""Aligned columns for the summaries the ``eventray`` command prints to people.

One formatter for every summary (demo, validate, apply, history, tokens), so they read alike:
a header, then rows with numbers right-aligned and text left-aligned, two spaces apart. Commands
print JSON instead when their output goes to a pipe or a file (``--format json``), so scripts
never parse these.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

__all__ = ["add_format_flag", "render", "wants_table", "write_table"]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def render(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, indent: str = ""
) -> list[str]:
    """The lines of a table (no trailing spaces). A column is right-aligned when every value
    in it is a number."""
    table = [list(row) for row in rows]
    cells = [[_cell(v) for v in row] for row in table]
    numeric = [
        all(isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in table)
        and bool(table)
        for i in range(len(headers))
    ]
    widths = [max([len(headers[i]), *(len(row[i]) for row in cells)]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(list(headers)), *(line(row) for row in cells)]


def write_table(
    out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[object]], *, indent: str = ""
) -> None:
    """:func:`render`, written to ``out``."""
    for text in render(headers, rows, indent=indent):
        out.write(text + "\n")


def add_format_flag(parser: argparse.ArgumentParser) -> None:
    """``--format table|json`` on a command whose default is a table for a terminal and JSON
    for a pipe or a file."""
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("table", "json"),
        help="table (default on a terminal) or json (default when piped or redirected)",
    )


def wants_table(choice: str | None, out: TextIO) -> bool:
    """Whether to print a table: as asked, else when ``out`` is a terminal."""
    if choice is not None:
        return choice == "table"
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and out is sys.stdout
