"""A TRANSPORT STAND-IN for a ClickHouse server: ClickHouse's HTTP interface in front of chDB.

**This is not ClickHouse.** No modern ClickHouse server installs on the machines this project
is developed on, yet the production event store (:mod:`pipeline.adapters.clickhouse_store`)
talks to one over HTTP with clickhouse-connect, and that code path must run in tests. This
module speaks the part of the HTTP interface clickhouse-connect uses and executes every
statement in chDB, which *is* the ClickHouse engine (same parser, formats, types, errors), so
what the adapter sends is parsed, stored and answered for real. Only the transport is
imitated.

What it implements:

- ``POST /`` and ``GET /``: the statement in the ``query`` URL parameter and/or the body (the
  two are joined by a newline, as ClickHouse does, so ``INSERT ... FORMAT X`` in either place
  followed by rows in the body works); ``multipart/form-data`` bodies with ``query`` and
  ``param_*`` fields (clickhouse-connect form-encodes large parameters).
- ``param_<name>`` server-side parameters, passed to chDB untouched (clickhouse-connect has
  already written them in the Escaped text form the engine parses).
- ``database``; ``default_format`` (else TabSeparated, ClickHouse's HTTP default); every other
  URL parameter that is not a transport parameter is a setting, applied with ``SET`` (an
  unknown setting fails like on the server); ``readonly`` and GET requests refuse writes.
- The connect probes (``SELECT version(), timezone()``, ``system.settings`` in Native) are
  answered by chDB itself; responses carry ``X-ClickHouse-Summary``,
  ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Timezone``, ``X-ClickHouse-Format`` (for
  statements with a result) and ``X-ClickHouse-Server-Display-Name``.
- Errors: HTTP 500 with ClickHouse's error text (``Code: N. DB::Exception: ...``) and the
  ``X-ClickHouse-Exception-Code`` header, so the client raises its usual exception; 401 with
  code 516 for wrong credentials (Basic auth, ``X-ClickHouse-User``/``-Key``, or
  ``user``/``password`` parameters).
- ``/ping`` and ``/replicas_status``; gzip, deflate and lz4 request bodies.
- ``INSERT ... FORMAT X`` with the rows in the body, binary formats included (Native is the
  client's default for inserts): the body reaches chDB as a file (``FROM INFILE``).

What it does not: sessions (``session_id`` is accepted and ignored; there is one chDB
session, and settings stay applied until a request stops sending them, when their original
value is restored), response compression (answers are sent uncompressed, which the client
accepts), zstd/br request bodies and ClickHouse's native compression (``decompress=1``),
external data tables, progress headers, query cancellation, TLS, users and quotas beyond one
username/password pair. Requests run one at a time (one lock around the engine).
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import gzip
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

try:
    from chdb.session import Session as _Session
except ImportError as exc:  # pragma: no cover - chdb is a dependency of the embedded stack
    raise ImportError("the ClickHouse HTTP stand-in needs chDB: pip install chdb") from exc

# chDB's Python API is unannotated; one typed entry point keeps strict mypy meaningful here.
_open_session: Callable[[str], Any] = _Session

__all__ = ["ClickHouseHttpStandIn"]

# URL parameters of the HTTP interface itself; everything else that is not param_* is a setting.
_TRANSPORT = frozenset(
    {
        "query", "database", "default_format", "query_id", "session_id", "session_timeout",
        "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
        "client_protocol_version", "quota_key", "role", "user", "password", "readonly",
    }
)  # fmt: skip
_RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK"}
)
_LEADING_NOISE = re.compile(rb"(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD = re.compile(rb"[A-Za-z]+")
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}


class _Failure(Exception):
    """A request that ends in a ClickHouse-style error response."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _first_keyword(sql: bytes) -> str:
    start = _LEADING_NOISE.match(sql)
    word = _FIRST_WORD.match(sql, start.end() if start else 0)
    return word.group(0).decode().upper() if word else ""


def _quote_text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Engine:
    """The chDB session and the per-request state applied to it (database, settings)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.session: Any = _open_session(str(path))
        self.lock = threading.Lock()
        found = self.session.query("SELECT version() AS v, timezone() AS tz", "JSONEachRow")
        row = orjson.loads(bytes(found.bytes()))
        self.version: str = row["v"]
        self.timezone: str = row["tz"]
        self._applied: dict[str, str] = {}
        self._originals: dict[str, str] = {}

    def _apply_settings(self, wanted: dict[str, str]) -> None:
        assert self.session is not None
        for name, value in wanted.items():
            if self._applied.get(name) == value:
                continue
            if not _SETTING_NAME.fullmatch(name):
                raise _Failure(500, 115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
            if name not in self._originals:
                found = self.session.query(
                    "SELECT value FROM system.settings WHERE name = {n:String}",
                    "JSONEachRow",
                    params={"n": name},
                )
                text = bytes(found.bytes())
                if not text.strip():
                    raise _Failure(500, 115, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
                self._originals[name] = orjson.loads(text)["value"]
            self.session.query(f"SET {name} = {_quote_text(value)}", "TabSeparated")
            self._applied[name] = value
        for name in [n for n in self._applied if n not in wanted]:
            self.session.query(f"SET {name} = {_quote_text(self._originals[name])}", "TabSeparated")
            del self._applied[name]

    def execute(
        self,
        sql: bytes,
        *,
        database: str,
        settings: dict[str, str],
        params: dict[str, str],
        default_format: str,
    ) -> Any:
        with self.lock:
            if self.session is None:
                raise _Failure(503, 210, "the stand-in is stopping. (NETWORK_ERROR)")
            self._apply_settings(settings)
            quoted = database.replace("\\", "\\\\").replace("`", "\\`")
            self.session.query(f"USE `{quoted}`", "TabSeparated")
            return self.session.query(sql, default_format, params=params)

    def close(self) -> None:
        with self.lock:
            session, self.session = self.session, None
        if session is not None:
            session.close()


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can end keep-alive connections too."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], stand_in: ClickHouseHttpStandIn) -> None:
        self.stand_in = stand_in
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's pool expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test run would otherwise print every request."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        stand_in = self.server.stand_in
        query_id = str(uuid.uuid4())
        base = {
            "X-ClickHouse-Server-Display-Name": stand_in.display_name,
            "X-ClickHouse-Timezone": stand_in.engine_timezone,
        }
        try:
            url = urlsplit(self.path)
            body = self._read_body()
            if url.path in ("/ping", "/replicas_status"):
                self._reply(200, b"Ok.\n", {**base, "Content-Type": "text/plain; charset=UTF-8"})
                return
            if url.path not in ("", "/"):
                raise _Failure(404, 0, f"There is no handle {url.path}")
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            query_id = params.get("query_id") or query_id
            body = self._decoded(body)
            body = self._form_fields(body, params)
            self._authenticate(params)
            self._run(method, params, body, query_id, base)
        except _Failure as failure:
            text = failure.args[0]
            if failure.code and not text.startswith("Code:"):
                text = f"Code: {failure.code}. DB::Exception: {text}"
            self._reply(
                failure.status,
                f"{text} (version {stand_in.engine_version})\n".encode(),
                {
                    **base,
                    "X-ClickHouse-Query-Id": query_id,
                    "X-ClickHouse-Exception-Code": str(failure.code),
                    "Content-Type": "text/plain; charset=UTF-8",
                },
            )

    def _decoded(self, body: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding in ("", "identity"):
            return body
        try:
            if encoding == "gzip":
                return gzip.decompress(body)
            if encoding == "deflate":
                return zlib.decompress(body)
            if encoding == "lz4":  # clickhouse-connect's choice for inserts when lz4 is there
                import lz4.frame

                return bytes(lz4.frame.decompress(body))
        except (OSError, zlib.error, RuntimeError) as exc:
            raise _Failure(500, 354, f"cannot decompress request body: {exc}") from exc
        raise _Failure(500, 1, f"the stand-in does not decode Content-Encoding {encoding!r}")

    def _form_fields(self, body: bytes, params: dict[str, str]) -> bytes:
        kind = self.headers.get("Content-Type", "")
        if not kind.lower().startswith("multipart/form-data"):
            return body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + body
        )
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                raise _Failure(500, 1, "the stand-in does not support external data tables")
            if isinstance(name, str):
                payload = part.get_payload(decode=True)
                params[name] = payload.decode() if isinstance(payload, bytes) else ""
        return b""

    def _authenticate(self, params: dict[str, str]) -> None:
        stand_in = self.server.stand_in
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password") or ""
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode(errors="replace")
            user, _, password = decoded.partition(":")
        if (user or "default") != stand_in.username or password != stand_in.password:
            raise _Failure(
                401,
                516,
                f"{user or 'default'}: Authentication failed: password is incorrect, or there "
                "is no user with such name. (AUTHENTICATION_FAILED)",
            )

    def _run(
        self, method: str, params: dict[str, str], body: bytes, query_id: str, base: dict[str, str]
    ) -> None:
        stand_in = self.server.stand_in
        text = params.get("query", "").encode()
        sql = text + b"\n" + body if text and body else text or body
        spooled: Path | None = None
        found_insert = _TRAILING_FORMAT.search(text) if text and body else None
        if found_insert is not None and _first_keyword(text) == "INSERT":
            # The rows are in the body: give them to the engine as a file, since chDB reads a
            # query as a C string and binary formats (Native, the client's default for
            # inserts) hold zero bytes.
            spooled = stand_in.spool_dir / f"insert-{query_id}.{found_insert.group(1).decode()}"
            spooled.write_bytes(body)
            sql = (
                text[: found_insert.start()]
                + f" FROM INFILE '{spooled}' FORMAT ".encode()
                + found_insert.group(1)
            )
        if not sql.strip():
            raise _Failure(500, 62, "Empty query. (SYNTAX_ERROR)")
        keyword = _first_keyword(sql)
        has_result = keyword in _RESULT_KEYWORDS
        if not has_result and (method == "GET" or params.get("readonly", "0") != "0"):
            raise _Failure(
                500,
                164,
                "Cannot execute query in readonly mode. For queries over HTTP, method GET "
                "implies readonly. You should use method POST for modifying queries. (READONLY)",
            )
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")
        }
        default_format = params.get("default_format") or "TabSeparated"
        started = time.perf_counter_ns()
        try:
            result = stand_in.engine.execute(
                sql,
                database=params.get("database") or "default",
                settings=settings,
                params=query_params,
                default_format=default_format,
            )
        except RuntimeError as exc:
            message = str(exc).strip()
            found = _ERROR_CODE.search(message)
            raise _Failure(
                500, int(found.group(1)) if found else 1001, message or "unknown error"
            ) from exc
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
        data = bytes(result.bytes())
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": "0",
            "result_bytes": str(len(data)),
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }
        headers = {
            **base,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
        }
        if has_result:
            found_format = _TRAILING_FORMAT.search(sql)
            fmt = found_format.group(1).decode() if found_format else default_format
            headers["X-ClickHouse-Format"] = fmt
            headers["Content-Type"] = _CONTENT_TYPES.get(fmt, "application/octet-stream")
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        self._reply(200, data, headers)


class ClickHouseHttpStandIn:
    """A TRANSPORT STAND-IN speaking ClickHouse's HTTP interface over chDB (see the module).

    Args:
        path: chDB data directory. chDB opens one directory per process: in a process that
            also runs a :class:`pipeline.adapters.chdb_store.ChdbEventStore`, give both the
            same directory (and different databases).
        host: interface to listen on; loopback only by default.
        port: 0 picks a free port.
        username: the one accepted user.
        password: its password.
    """

    display_name = "eventray-clickhouse-stand-in"

    def __init__(
        self,
        *,
        path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "default",
        password: str = "",
    ) -> None:
        self.path = path
        self.host = host
        self.username = username
        self.password = password
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._engine: _Engine | None = None

    @property
    def spool_dir(self) -> Path:
        """Where insert bodies are handed to the engine as files."""
        return self.path

    @property
    def engine(self) -> _Engine:
        """The chDB engine behind the interface (while running)."""
        if self._engine is None:
            raise _Failure(503, 210, "the stand-in is not running")
        return self._engine

    @property
    def engine_version(self) -> str:
        """chDB's ClickHouse version, reported in error texts as a server would."""
        return self._engine.version if self._engine else ""

    @property
    def engine_timezone(self) -> str:
        """The engine's time zone (``X-ClickHouse-Timezone``)."""
        return self._engine.timezone if self._engine else "UTC"

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` for clickhouse-connect (after start)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> ClickHouseHttpStandIn:
        """Open chDB and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._engine = _Engine(self.path)
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except OSError:
            self._engine.close()
            self._engine = None
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"clickhouse-http-stand-in:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections, join every thread, close chDB (idempotent)."""
        server, thread, engine = self._server, self._thread, self._engine
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()  # joins the request threads
        if thread is not None:
            thread.join(timeout=10)
        if engine is not None:
            engine.close()
            self._engine = None

    def __enter__(self) -> ClickHouseHttpStandIn:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
