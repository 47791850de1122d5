"""Exporting query results as JSON lines, JSON or CSV, page by page.

An export never holds more than one page: :func:`follow` fetches the next page only when the
previous one has been written, and :func:`export` turns each page into bytes as it comes (an
HTTP route can stream them as they are; the CLI writes them to standard output).

- ``jsonl``: one JSON object per row; if the last page written has a ``next_cursor`` (the
  export stopped before the end), a final ``{"nextCursor": ...}`` line says where to resume.
- ``json``: one document ``{"rows": [...], "nextCursor": ... | null}``.
- ``csv``: a header, then one line per row; maps, lists and JSON values as compact JSON text
  (``eva_number`` reads ``{"1":-19.4}``), booleans ``true``/``false``, missing values empty.
  CSV has no place for a cursor: export with ``follow`` to the end, or use JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

import orjson

__all__ = ["FORMATS", "ExportFormat", "Page", "csv_value", "export", "follow"]

ExportFormat = Literal["jsonl", "json", "csv"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "json", "csv")
_JSON = orjson.OPT_NON_STR_KEYS


class Page(Protocol):
    """A page of rows (:class:`~eventray.pipeline.storage.query.EventPage`,
    :class:`~eventray.pipeline.storage.logs.LogPage`)."""

    @property
    def rows(self) -> list[dict[str, Any]]: ...

    @property
    def next_cursor(self) -> str | None: ...


def follow(
    fetch: Callable[[str | None], Page], *, cursor: str | None = None, max_pages: int | None = None
) -> Iterator[Page]:
    """Pages from ``fetch(cursor)``, each asked for after the previous one was consumed, until
    a page has no ``next_cursor`` (or ``max_pages`` were read)."""
    read = 0
    while True:
        page = fetch(cursor)
        read += 1
        yield page
        cursor = page.next_cursor
        if cursor is None or (max_pages is not None and read >= max_pages):
            return


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=_JSON)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_value(value: Any) -> str:
    """One cell: text as is, booleans ``true``/``false``, None empty, containers JSON.

    Text is written by devices and tenants: a cell that starts like a spreadsheet formula
    (``= + - @``, tab, carriage return) gets a leading ``'``, so opening an export cannot run
    ``=HYPERLINK(...)`` or ``=cmd|...`` written by a device (OWASP's CSV injection advice).
    Numbers are not text and stay as they are (``-19.4``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return _dumps(value).decode()
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return str(value)


def _jsonl(pages: Iterable[Page]) -> Iterator[bytes]:
    cursor: str | None = None
    for page in pages:
        yield b"".join(_dumps(row) + b"\n" for row in page.rows)
        cursor = page.next_cursor
    if cursor is not None:
        yield _dumps({"nextCursor": cursor}) + b"\n"


def _json(pages: Iterable[Page]) -> Iterator[bytes]:
    yield b'{"rows":['
    first = True
    cursor: str | None = None
    for page in pages:
        chunk = b",".join(_dumps(row) for row in page.rows)
        if chunk:
            yield chunk if first else b"," + chunk
            first = False
        cursor = page.next_cursor
    yield b'],"nextCursor":' + _dumps(cursor) + b"}\n"


def _csv(pages: Iterable[Page], columns: Sequence[str] | None) -> Iterator[bytes]:
    header: list[str] | None = list(columns) if columns else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for page in pages:
        for row in page.rows:
            if header is None:
                header = list(row)
                writer.writerow(header)
            writer.writerow([csv_value(row.get(name)) for name in header])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # only a header: no page had rows
        yield buffer.getvalue().encode()


def export(
    pages: Iterable[Page], fmt: ExportFormat, *, columns: Sequence[str] | None = None
) -> Iterator[bytes]:
    """``pages`` as ``fmt`` bytes, one chunk per page.

    Args:
        pages: e.g. :func:`follow` over a store's query.
        fmt: ``jsonl``, ``json`` or ``csv``.
        columns: CSV columns, in order (default: the first row's keys); give them so that an
            empty result still has a header.
    """
    if fmt == "jsonl":
        return _jsonl(pages)
    if fmt == "json":
        return _json(pages)
    if fmt == "csv":
        return _csv(pages, columns)
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
