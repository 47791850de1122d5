"""The embedded event store: chDB (ClickHouse in-process), same DDL and SQL as the server.

chDB keeps its data in a directory and allows one such directory per process, locked against
other processes: one actor owns the store and every read and write goes through it.

Query parameters: chDB 4.4's ``Session.query(sql, fmt, params=...)`` binds ``{name:Type}``
placeholders server-side, exactly like ClickHouse's ``param_<name>`` HTTP parameters, and
like those it parses each value from its *text* form in ClickHouse's Escaped format (a
backslash starts an escape, a tab or newline ends the value, ``\\N`` is NULL).
:func:`param_text` is the one place that turns Python values into that text; nothing else
formats a value into SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.rows import format_ts, json_each_row, parse_json_each_row
from eventray.pipeline.storage.schema import (
    DEFAULT_DATABASE,
    TABLES,
    check_identifier,
    ddl_statements,
)

try:
    from chdb.session import Session as _Session
except ImportError as exc:  # pragma: no cover - chdb is a dependency of the embedded stack
    raise ImportError("the embedded event store needs chDB: pip install chdb") from exc

# chDB's Python API is unannotated; one typed entry point keeps strict mypy meaningful here.
_open_session: Callable[[str], Any] = _Session

__all__ = ["ChdbEventStore", "ChdbQueryError", "ChdbUnavailableError", "param_text"]

# Escaped-format escapes: a raw tab or newline would end the value, a lone backslash would
# start an escape, and \N alone would read as NULL.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


class ChdbUnavailableError(RetryableError):
    """The chDB data directory cannot be opened (another process holds it, or this process
    already opened a different one): retry once the holder is gone."""


class ChdbQueryError(PermanentError):
    """chDB refused a statement (bad SQL, bad value, unknown table): retrying cannot help."""


def _literal(value: Any) -> str:
    """An element inside an array parameter: a SQL literal, quoted when text."""
    if isinstance(value, str):
        return "'" + value.translate(_ESCAPES).replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        return f"'{format_ts(value)}'"
    if value is None:
        return "NULL"
    return param_text(value)


def param_text(value: Any) -> str:
    """A parameter value as the text ClickHouse parses ``{name:Type}`` parameters from.

    Supports text, numbers, booleans (1/0), datetimes (UTC text with milliseconds), None
    (NULL) and lists/tuples of those (arrays). Anything else is a TypeError, never ``str()``.
    """
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))  # int() drops subclass reprs such as IntEnum's
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"unsupported query parameter type {type(value).__name__}")


class ChdbEventStore(EventStore):
    """The event store in a chDB data directory.

    Args:
        path: the data directory (created if missing); one process at a time.
        database: the database holding the tables.

    Raises:
        ChdbUnavailableError: the directory is held by another process, or this process has
            another chDB directory open (chDB allows one per process).
    """

    def __init__(self, *, path: Path, database: str = DEFAULT_DATABASE) -> None:
        self._database = check_identifier(database)
        if "?" in str(path):
            raise ValueError(f"chDB reads '?' in a path as connection options: {path}")
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        try:
            self._session: Any = _open_session(str(path))
        except RuntimeError as exc:
            raise ChdbUnavailableError(
                f"cannot open chDB data directory {path}: another process holds it, or this "
                f"process already has another chDB directory open ({exc})"
            ) from exc

    @property
    def database(self) -> str:
        """The database holding the tables."""
        return self._database

    def _run(self, sql: str | bytes, fmt: str, params: dict[str, str] | None = None) -> Any:
        with self._lock:
            if self._session is None:
                raise RuntimeError("the chDB event store is closed")
            try:
                return self._session.query(sql, fmt, params=params)
            except RuntimeError as exc:
                raise ChdbQueryError(str(exc)) from exc

    def ensure_schema(self) -> None:
        """Create the database and every table if missing (idempotent)."""
        for statement in ddl_statements(self._database):
            self._run(statement, "TabSeparated")

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` into ``table`` with one ``INSERT ... FORMAT JSONEachRow``."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        if not rows:
            return
        head = f"INSERT INTO {self._database}.{table} FORMAT JSONEachRow\n".encode()
        self._run(json_each_row(rows, head), "TabSeparated")

    def insert_encoded(self, table: str, block: bytes) -> None:
        """Insert ``JSONEachRow`` lines produced elsewhere (one statement)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        if not block:
            return
        head = f"INSERT INTO {self._database}.{table} FORMAT JSONEachRow\n".encode()
        self._run(head + block, "TabSeparated")

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query with ``{name:Type}`` parameters; rows as dicts (JSONEachRow)."""
        params = {name: param_text(value) for name, value in (parameters or {}).items()}
        result = self._run(sql, "JSONEachRow", params)
        return parse_json_each_row(bytes(result.bytes()))

    def close(self) -> None:
        """Close the chDB session (idempotent); the directory is free for others after."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> ChdbEventStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
