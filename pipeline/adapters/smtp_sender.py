"""The SMTP transport of email trigger deliveries, over the standard library's ``smtplib``.

Two costs shaped it, both measured in the trigger actor under the benchmark's load (about one
email per ten events): opening a connection per email (connect, EHLO, STARTTLS, AUTH, QUIT:
five round trips before the one that matters) and building the message with the ``email``
package's default policy (~370 us of CPU per message). So:

- **Connections are kept**, one per worker thread and server (``smtplib`` clients are not
  thread-safe), reused for the next email to the same server and dropped after
  ``idle_s`` without use; a kept connection the server has closed meanwhile is opened again
  and the email sent once more on the new one.
- **Messages are built directly** (:func:`email_bytes`): RFC 5322 headers with RFC 2047
  encoded words where text is not ASCII, bodies in base64 (safe for any text and line length),
  ``multipart/alternative`` when the trigger has an HTML body. Line breaks in rendered header
  values (a subject rendered from event data) become spaces, so no value can add a header.

SMTP's reply codes decide retrying: 4xx (and connection failures) are transient, 5xx
permanent (a refused recipient will not be accepted on the next try).

The SMTP host is resolved here, not by ``smtplib``, and only an address the
:class:`~eventray.pipeline.adapters.egress.EgressPolicy` allows is connected to; TLS still
checks the certificate against the host name the trigger gives. A refused host fails the
delivery once (:class:`~eventray.pipeline.adapters.egress.DeliveryRefused`).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import smtplib
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate, make_msgid

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import EmailRequest

__all__ = ["SmtpSender", "email_bytes"]

_BREAKS = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


def _header_text(value: str) -> str:
    """A header value on one line; RFC 2047 base64 words when it is not plain ASCII."""
    flat = value.translate(_BREAKS)
    if flat.isascii():
        return flat
    encoded = base64.b64encode(flat.encode()).decode()
    # Encoded words are limited to 75 characters: split the base64 on 4-character groups.
    words = [encoded[i : i + 40] for i in range(0, len(encoded), 40)]
    return " ".join(f"=?utf-8?b?{word}?=" for word in words)


def _addresses(values: tuple[str, ...]) -> str:
    return ", ".join(v.translate(_BREAKS).strip() for v in values)


def _base64_body(text: str) -> bytes:
    raw = base64.b64encode(text.encode())
    return b"\r\n".join(raw[i : i + 76] for i in range(0, len(raw), 76))


def _part(text: str, subtype: str) -> bytes:
    return (
        (
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + _base64_body(text)
        + b"\r\n"
    )


def email_bytes(request: EmailRequest) -> bytes:
    """The message as sent: plain text, plus an HTML alternative when the trigger has one."""
    headers = [
        f"From: {_header_text(request.from_addr)}",
        f"To: {_addresses(request.to)}",
    ]
    if request.cc:
        headers.append(f"Cc: {_addresses(request.cc)}")
    headers += [
        f"Subject: {_header_text(request.subject)}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {make_msgid(domain='eventray')}",
        "MIME-Version: 1.0",
    ]
    head = ("\r\n".join(headers) + "\r\n").encode()
    if not request.html_body:
        return head + _part(request.body or "", "plain")
    boundary = f"=_eventray_{secrets.token_hex(12)}"
    return (
        head
        + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
        + f"--{boundary}\r\n".encode()
        + _part(request.body or "", "plain")
        + f"--{boundary}\r\n".encode()
        + _part(request.html_body, "html")
        + f"--{boundary}--\r\n".encode()
    )


def _checked_socket(policy: EgressPolicy, host: str, port: int, timeout: float) -> socket.socket:
    """A connection to the first allowed address ``host`` resolves to that answers.

    Raises:
        EgressRefused: every address ``host`` resolves to is refused by ``policy``.
    """
    error: OSError | None = None
    for address in policy.resolve("SMTP server", host, port):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError(f"{host} resolved to no address")


class _GuardedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` connecting only where ``policy`` allows (STARTTLS keeps the name)."""

    def __init__(self, host: str, port: int, *, policy: EgressPolicy, timeout: float) -> None:
        self.egress = policy  # before super().__init__, which connects
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return _checked_socket(self.egress, host, port, timeout)


class _GuardedSMTPSSL(smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` connecting only where ``policy`` allows; the certificate is
    checked against the host name, not the address connected to."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        policy: EgressPolicy,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        self.egress = policy
        self.server_name = host  # what the certificate must name
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = _checked_socket(self.egress, host, port, timeout)
        return self.context.wrap_socket(raw, server_hostname=self.server_name)


class SmtpSender:
    """Sends :class:`EmailRequest`s on kept connections.

    Args:
        policy: where emails may be sent (default: SMTP servers on public addresses only).
        tls_context: verifies servers (the default context does).
        threads: emails in flight at once (each thread keeps its own connections).
        idle_s: a kept connection unused this long is closed before the next email.
    """

    def __init__(
        self,
        *,
        policy: EgressPolicy | None = None,
        tls_context: ssl.SSLContext | None = None,
        threads: int = 4,
        idle_s: float = 30.0,
    ) -> None:
        self.policy = policy or EgressPolicy()
        self.tls_context = tls_context or ssl.create_default_context()
        self.idle_s = idle_s
        self.connects = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smtp")
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    async def __call__(self, request: EmailRequest) -> SendResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._send, request)

    def _kept(self) -> dict[tuple[object, ...], tuple[smtplib.SMTP, float]]:
        kept = getattr(self._local, "kept", None)
        if kept is None:
            kept = self._local.kept = {}
        return kept

    def _open(self, request: EmailRequest) -> smtplib.SMTP:
        client: smtplib.SMTP
        if request.port == 465:
            client = _GuardedSMTPSSL(
                request.host,
                request.port,
                policy=self.policy,
                timeout=request.timeout_s,
                context=self.tls_context,
            )
        else:
            client = _GuardedSMTP(
                request.host, request.port, policy=self.policy, timeout=request.timeout_s
            )
        try:
            client.ehlo()
            if request.port != 465 and client.has_extn("starttls"):
                client.starttls(context=self.tls_context)
                client.ehlo()
            if request.username:
                client.login(request.username, request.password or "")
        except BaseException:
            client.close()
            raise
        self.connects += 1
        with self._lock:
            self._all.append(client)
        return client

    def _send(self, request: EmailRequest) -> SendResult:
        where = f"SMTP {request.host}:{request.port}"
        key = (request.host, request.port, request.username, request.password)
        kept = self._kept()
        message = email_bytes(request)
        recipients = [*request.to, *request.cc]
        client: smtplib.SMTP | None = None
        try:
            found = kept.pop(key, None)
            if found is not None and time.monotonic() - found[1] >= self.idle_s:
                _quit(found[0])
                found = None
            client = found[0] if found is not None else self._open(request)
            try:
                refused = client.sendmail(request.from_addr, recipients, message)
            except smtplib.SMTPServerDisconnected:
                if found is None:
                    raise
                _quit(client)  # the server closed the kept connection: once more, fresh
                client = None
                client = self._open(request)
                refused = client.sendmail(request.from_addr, recipients, message)
            kept[key] = (client, time.monotonic())
            client = None  # kept for the next email
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            detail = "; ".join(f"{rcpt}: {code}" for rcpt, (code, _) in exc.recipients.items())
            return _answer(codes[-1], f"{where}: every recipient refused ({detail})")
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth, ...
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return _answer(exc.smtp_code, f"{where}: {exc.smtp_code} {text}")
        except EgressRefused as exc:
            raise DeliveryRefused(str(exc)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from exc
        finally:
            if client is not None:  # after a failure the session's state is unknown: drop it
                _quit(client)
        if refused:
            partly = "; ".join(f"{rcpt}: {code}" for rcpt, (code, _) in refused.items())
            return SendResult(250, f"accepted, but some recipients refused ({partly})")
        return SendResult(250, "accepted")

    async def close(self) -> None:
        """Close every kept connection and stop the threads."""
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            _quit(client)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _answer(code: int, text: str) -> SendResult:
    return SendResult(code, text, retryable=400 <= code < 500, error=f"SMTP {code}")
