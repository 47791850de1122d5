"""The production event store: a ClickHouse server over HTTP, with clickhouse-connect.

Inserts go columnar in ClickHouse's Native format (clickhouse-connect's encoder, column types
from the DDL so no DESCRIBE precedes them); reads come back as ``JSONEachRow`` text, parsed by
the same function as the chDB adapter's. A transport stand-in
(:mod:`eventray.testing.clickhouse_http`) tests this adapter without a server.
Query parameters are clickhouse-connect's server-side binding (``param_<name>``), never
formatted into the SQL.

Errors: a server that cannot be reached, or answers with an error that says "later" (too many
queries, memory, timeouts, replicas catching up), raises :class:`ClickHouseUnavailableError`
(retryable); an error in the statement or the data raises :class:`ClickHouseQueryError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.rows import parse_json_each_row
from eventray.pipeline.storage.schema import (
    DEFAULT_DATABASE,
    TABLES,
    check_identifier,
    column_types,
    columns_of,
    ddl_statements,
)

try:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
except ImportError as exc:  # pragma: no cover - a declared dependency
    raise ImportError("the ClickHouse event store needs clickhouse-connect") from exc

__all__ = ["ClickHouseEventStore", "ClickHouseQueryError", "ClickHouseUnavailableError"]

# Server error codes that describe the server's state, not the statement: retry later.
_TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)


class ClickHouseUnavailableError(RetryableError):
    """The server is unreachable or temporarily refusing work; the batch may be retried."""


class ClickHouseQueryError(PermanentError):
    """The server refused the statement or its data; retrying the same input cannot help."""


def _translate(exc: ClickHouseError, what: str) -> Exception:
    code = getattr(exc, "code", None)
    if isinstance(exc, OperationalError) or code in _TRANSIENT_CODES:
        return ClickHouseUnavailableError(f"{what}: {exc}")
    return ClickHouseQueryError(f"{what}: {exc}")


class ClickHouseEventStore(EventStore):
    """The event store on a ClickHouse server.

    Args:
        url: ``http(s)://user:password@host:port`` (takes precedence over host/port).
        host: server host, when no url is given.
        port: HTTP(S) port (8123 / 8443 by default).
        username: user (default: ClickHouse's ``default``).
        password: password.
        database: database holding the tables (created by :meth:`ensure_schema`).
        connect_timeout_s: seconds to establish a connection.
        send_receive_timeout_s: seconds to wait for a response.

    Raises:
        ClickHouseUnavailableError: the server cannot be reached (the client connects and
            reads the server's version and settings on construction).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        host: str = "localhost",
        port: int | None = None,
        username: str | None = None,
        password: str = "",
        database: str = DEFAULT_DATABASE,
        connect_timeout_s: int = 10,
        send_receive_timeout_s: int = 300,
    ) -> None:
        self._database = check_identifier(database)
        target: dict[str, Any] = {"dsn": url} if url else {"host": host, "port": port}
        try:
            # No database on the connection: it may not exist until ensure_schema creates it,
            # so every statement names it. No session: nothing here needs server-side session
            # state, and a session would forbid concurrent use of the client.
            self._client: Any = clickhouse_connect.get_client(
                **target,
                username=username,
                password=password,
                connect_timeout=connect_timeout_s,
                send_receive_timeout=send_receive_timeout_s,
                autogenerate_session_id=False,
                dedicated_pool=True,
            )
        except ClickHouseError as exc:
            raise _translate(exc, "cannot connect to ClickHouse") from exc
        self._closed = False

    @property
    def database(self) -> str:
        """The database holding the tables."""
        return self._database

    def ensure_schema(self) -> None:
        """Create the database and every table if missing (idempotent)."""
        for statement in ddl_statements(self._database):
            try:
                self._client.command(statement)
            except ClickHouseError as exc:
                raise _translate(exc, "schema statement failed") from exc

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert row tuples (DDL column order, dates as epoch milliseconds) into ``table`` in
        one request, encoded columnar in ClickHouse's Native format by clickhouse-connect.

        Raises:
            ValueError: ``table`` is not one of :data:`TABLES`.
            ClickHouseUnavailableError: the server cannot be reached.
            ClickHouseQueryError: the server refused the rows.
        """
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        if not rows:
            return
        try:
            self._client.insert(
                table,
                rows,
                column_names=list(columns_of(table)),
                column_type_names=list(column_types(table)),  # no DESCRIBE round trip
                database=self._database,
            )
        except ClickHouseError as exc:
            raise _translate(exc, f"insert into {table} failed") from exc
        except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
            raise ClickHouseQueryError(f"rows for {table} do not fit its columns: {exc}") from exc

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query with ``{name:Type}`` parameters; rows as dicts (JSONEachRow)."""
        try:
            data = self._client.raw_query(sql, parameters=dict(parameters or {}), fmt="JSONEachRow")
        except ClickHouseError as exc:
            raise _translate(exc, "query failed") from exc
        return parse_json_each_row(data)

    def close(self) -> None:
        """Close the client's connections (idempotent)."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> ClickHouseEventStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
