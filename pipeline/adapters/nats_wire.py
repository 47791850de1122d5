"""A minimal NATS protocol connection for the hot path: pulling partitions and acknowledging.

Why not nats-py for this: nats-py turns every delivered message into a ``Msg`` object and parses
its headers with a general parser, ~8-10 us per message in a profile of a lane (about a tenth of
the lane's CPU); JetStream pulls need none of that. This connection speaks the few protocol
operations a pull consumer needs (``CONNECT``, ``SUB``, ``PUB``, ``PING``/``PONG``, ``MSG`` and
``HMSG``) and parses deliveries in bulk from its read buffer, keeping each message as three
byte strings until the pipeline asks for its fields. Everything else (stream and consumer
management, publishing with acknowledgements, the trigger queue) stays on nats-py, in
:mod:`eventray.pipeline.adapters.nats_bus`.

Authentication as in a NATS URL: ``nats://user:password@host:port`` or
``nats://token@host:port``; TLS for ``tls://`` URLs or when the server requires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from eventray.pipeline.errors import RetryableError

__all__ = ["WireConnection", "WireError", "WireMessage"]

_CRLF = b"\r\n"


class WireError(RetryableError):
    """The pull connection failed (closed, refused, protocol error): reconnect and pull again."""


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A message as it came off the wire: its subject, its reply subject (a JetStream ack
    subject), its raw header block (``b""`` for none) and its payload."""

    subject: bytes
    reply: bytes
    headers: bytes
    payload: bytes

    def header(self, name: bytes) -> str:
        """One header's value ("" when absent); names are compared case-sensitively, as
        JetStream and the ingress write them."""
        start = self.headers.find(b"\r\n" + name + b":")
        if start < 0:
            return ""
        start += len(name) + 3
        end = self.headers.find(b"\r\n", start)
        return self.headers[start:end].strip().decode()

    @property
    def status(self) -> int:
        """A status message's code (404 no messages, 408 request expired, 409 ...), else 0."""
        if not self.headers.startswith(b"NATS/1.0 "):
            return 0
        code = self.headers[9:12]
        return int(code) if code.isdigit() else 0


Handler = Callable[[WireMessage], None]


def header_block(headers: Mapping[str, str]) -> bytes:
    """NATS headers as sent on the wire (``NATS/1.0`` and one ``Name: value`` line each).

    Raises:
        ValueError: a name or value holds a line break (it would forge other headers).
    """
    lines = [b"NATS/1.0"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        lines.append(f"{name}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class WireConnection:
    """One TCP connection to a NATS server, for subscriptions whose messages are handled in
    bulk by plain callbacks (no task per message).

    Args:
        url: the server's URL (the first of a comma-separated list).
        name: the client name the server shows (``nats-server`` connz).
        timeout_s: connect and handshake timeout.
        inbox_prefix: the first tokens of this connection's reply subjects (a server may allow
            each user to subscribe to its own inboxes only).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "eventray-pull",
        timeout_s: float = 5.0,
        inbox_prefix: str = "_INBOX",
    ) -> None:
        self.url = url.split(",")[0].strip()
        self.name = name
        self.inbox_prefix = inbox_prefix
        self.timeout_s = timeout_s
        self.max_payload = 1024 * 1024
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._handlers: dict[bytes, Handler] = {}
        self._next_sid = 0
        self._pongs: list[asyncio.Future[None]] = []
        self._read_task: asyncio.Task[None] | None = None
        self._reply_sid: bytes | None = None
        self._reply_prefix = ""
        self._reply_seq = 0
        self._replies: dict[bytes, asyncio.Future[WireMessage]] = {}
        self._connecting = asyncio.Lock()
        self.error = ""

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing() and not self.error

    async def connect(self) -> None:
        """Open the connection and finish the handshake (idempotent while connected; callers
        racing to connect share one connection)."""
        async with self._connecting:
            if not self.connected:
                await self._connect()

    async def _connect(self) -> None:
        await self.close()
        self.error = ""
        parts = urlsplit(self.url if "://" in self.url else f"nats://{self.url}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.timeout_s
            )
            info = await asyncio.wait_for(reader.readline(), self.timeout_s)
            if not info.startswith(b"INFO "):
                raise WireError(f"not a NATS server at {host}:{port}: {info[:40]!r}")
            server = orjson.loads(info[5:])
            if parts.scheme == "tls" or server.get("tls_required"):
                context = ssl.create_default_context()
                await writer.start_tls(context, server_hostname=host)
            self.max_payload = int(server.get("max_payload", self.max_payload))
            options: dict[str, Any] = {
                "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "lang": "python-eventray", "version": "1", "protocol": 1, "name": self.name,
            }  # fmt: skip
            if parts.username and parts.password is not None:
                options["user"], options["pass"] = unquote(parts.username), unquote(parts.password)
            elif parts.username:
                options["auth_token"] = unquote(parts.username)
            writer.write(b"CONNECT " + orjson.dumps(options) + b"\r\nPING\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), self.timeout_s)
            while answer.startswith(b"INFO "):
                answer = await asyncio.wait_for(reader.readline(), self.timeout_s)
            if not answer.startswith(b"PONG"):
                raise WireError(
                    f"NATS refused the connection: {answer.strip().decode(errors='replace')}"
                )
        except (OSError, TimeoutError, ValueError) as exc:
            raise WireError(f"cannot connect to NATS at {host}:{port}: {exc}") from exc
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.create_task(self._read_loop(reader))
        self._handlers.clear()  # the server forgot them: owners subscribe again
        self._reply_sid = None

    def subscribe(self, subject: str, handler: Handler) -> bytes:
        """Subscribe ``handler`` to ``subject``; returns the subscription id."""
        writer = self._live()
        self._next_sid += 1
        sid = str(self._next_sid).encode()
        self._handlers[sid] = handler
        writer.write(b"SUB " + subject.encode() + b" " + sid + _CRLF)
        return sid

    def unsubscribe(self, sid: bytes) -> None:
        self._handlers.pop(sid, None)
        if self.connected:
            assert self._writer is not None
            self._writer.write(b"UNSUB " + sid + _CRLF)

    def publish(self, subject: str | bytes, payload: bytes, reply: str = "") -> None:
        """Queue a message for the server (sent at the next drain; see :meth:`flush`)."""
        writer = self._live()
        subject_b = subject.encode() if isinstance(subject, str) else subject
        head = b"PUB " + subject_b + (b" " + reply.encode() if reply else b"")
        writer.write(head + b" " + str(len(payload)).encode() + _CRLF + payload + _CRLF)

    async def request_many(
        self, messages: Sequence[tuple[str, bytes, bytes]], *, timeout_s: float
    ) -> list[WireMessage]:
        """Publish ``(subject, header block or b"", payload)`` messages, each with its own
        reply subject, and wait for every reply (JetStream's publish acknowledgements): one
        write and one wait for the lot, instead of a round trip each.

        Raises:
            WireError: the connection failed, or a reply did not come within ``timeout_s``.
        """
        writer = self._live()
        if self._reply_sid is None:
            self._reply_prefix = f"{self.inbox_prefix}.{secrets.token_hex(10)}."
            self._reply_sid = self.subscribe(self._reply_prefix + "*", self._on_reply)
        loop = asyncio.get_running_loop()
        futures = []
        chunks = []
        prefix = self._reply_prefix
        tokens = []
        for subject, headers, payload in messages:
            self._reply_seq += 1
            token = str(self._reply_seq)
            future: asyncio.Future[WireMessage] = loop.create_future()
            self._replies[token.encode()] = future
            tokens.append(token.encode())
            futures.append(future)
            reply = (prefix + token).encode()
            if headers:
                size = len(headers) + len(payload)
                chunks.append(
                    b"HPUB %s %s %d %d\r\n%s%s\r\n"
                    % (subject.encode(), reply, len(headers), size, headers, payload)
                )
            else:
                chunks.append(
                    b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply, len(payload), payload)
                )
        writer.write(b"".join(chunks))
        try:
            await writer.drain()
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout_s))
        except (OSError, TimeoutError) as exc:
            raise WireError(f"no acknowledgement within {timeout_s:g} s: {exc}") from exc
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            for mine in tokens:  # only this call's: others may be waiting on theirs
                self._replies.pop(mine, None)

    def _on_reply(self, message: WireMessage) -> None:
        token = message.subject[message.subject.rfind(b".") + 1 :]
        future = self._replies.pop(token, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until the server has processed everything written so far (PING/PONG)."""
        writer = self._live()
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        writer.write(b"PING\r\n")
        try:
            await writer.drain()
            await asyncio.wait_for(pong, timeout_s)
        except (OSError, TimeoutError) as exc:
            raise WireError(f"NATS did not answer a flush: {exc}") from exc

    async def drain(self) -> None:
        """Hand what was written to the socket (backpressure)."""
        try:
            await self._live().drain()
        except OSError as exc:
            raise WireError(f"NATS connection lost: {exc}") from exc

    def _live(self) -> asyncio.StreamWriter:
        if not self.connected:
            raise WireError(f"not connected to NATS ({self.error or 'closed'})")
        assert self._writer is not None
        return self._writer

    async def close(self) -> None:
        task, self._read_task = self._read_task, None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_waiters(WireError("connection closed"))

    def _fail_waiters(self, error: WireError) -> None:
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(error)
        self._pongs = []
        for future in self._replies.values():
            if not future.done():
                future.set_exception(error)
        self._replies.clear()

    # ------------------------------------------------------------------ reading
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        try:
            while True:
                chunk = await reader.read(1 << 18)
                if not chunk:
                    raise WireError("the server closed the connection")
                buffer = self._parse(buffer + chunk if buffer else chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._fail_waiters(WireError(self.error))
            if self._writer is not None:
                self._writer.close()

    def _parse(self, data: bytes) -> bytes:
        """Handle every complete frame in ``data``; returns the incomplete rest."""
        position, size = 0, len(data)
        handlers = self._handlers
        while position < size:
            end = data.find(_CRLF, position)
            if end < 0:
                break
            line = data[position:end]
            if line.startswith(b"HMSG "):
                # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
                fields = line.split(b" ")
                total = int(fields[-1])
                start = end + 2
                if start + total + 2 > size:
                    break
                header_size = int(fields[-2])
                block = data[start : start + total]
                handler = handlers.get(fields[2])
                if handler is not None:
                    reply = fields[3] if len(fields) == 6 else b""
                    handler(WireMessage(fields[1], reply, block[:header_size], block[header_size:]))
                position = start + total + 2
            elif line.startswith(b"MSG "):
                fields = line.split(b" ")
                total = int(fields[-1])
                start = end + 2
                if start + total + 2 > size:
                    break
                handler = handlers.get(fields[2])
                if handler is not None:
                    reply = fields[3] if len(fields) == 5 else b""
                    handler(WireMessage(fields[1], reply, b"", data[start : start + total]))
                position = start + total + 2
            else:
                position = end + 2
                if line == b"PING":
                    if self._writer is not None:
                        self._writer.write(b"PONG\r\n")
                elif line == b"PONG":
                    if self._pongs:
                        pong = self._pongs.pop(0)
                        if not pong.done():
                            pong.set_result(None)
                elif line.startswith(b"-ERR"):
                    self.error = line.decode(errors="replace")
        return data[position:]
