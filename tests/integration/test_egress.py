"""Where trigger deliveries may connect (SSRF guard), against real local HTTP and SMTP servers.

By default a delivery may reach only public addresses; the servers here listen on loopback, so
they stand for the metrics port, the metadata service or a database a tenant must not reach,
and ``triggers.allow_networks`` stands for the operator opening one on purpose.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from eventray.cluster.wiring import Endpoints, Wiring
from eventray.config.settings import load_settings
from eventray.pipeline.adapters.egress import EgressPolicy, EgressRefused
from eventray.pipeline.adapters.http_sender import RESPONSE_KEPT_BYTES, AiohttpSender
from eventray.pipeline.adapters.smtp_sender import SmtpSender, _GuardedSMTPSSL
from eventray.pipeline.errors import SettingsError
from eventray.pipeline.models import Trigger
from eventray.pipeline.triggers.delivery import (
    Deliverer,
    DeliveryGroup,
    DeliveryOutcome,
    Sender,
    SendResult,
)
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, HttpRequest
from eventray.testing.mail_sink import MailSink
from eventray.testing.sink import WebhookSink

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])
REFUSAL = "{target} {host}:{port} resolves to {address}, a loopback address; " + (
    "allow it with triggers.allow_networks"
)

Answer = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Server:
    """An HTTP server on ``host`` (free port) that records each request and lets ``answer``
    write the response."""

    host: str
    answer: Answer
    seen: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def __enter__(self) -> Server:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers),
                     "body": body}
                )  # fmt: skip
                owner.answer(self)

            do_GET = do_POST = _any

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def redirect_to(location: str, status: int = 302) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"ok")


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as running:
        yield running


@pytest.fixture
def mail() -> Iterator[MailSink]:
    with MailSink() as running:
        yield running


def http_trigger(url: str, method: str = "POST") -> Trigger:
    return Trigger.model_validate(
        {"id": "hook", "orgId": "o", "name": "h", "triggerType": "http",
         "config": {"http": {"endpoint": url, "method": method, "body": {"t": "{{event.data.t}}"},
                             "headers": {"Authorization": "Bearer t0k"}, "timeoutMs": 2000}}}
    )  # fmt: skip


def email_trigger(host: str, port: int) -> Trigger:
    return Trigger.model_validate(
        {"id": "mail", "orgId": "o", "name": "m", "triggerType": "email",
         "config": {"email": {"smtpHost": host, "smtpPort": port, "fromAddr": "a@example.com",
                              "to": ["ops@example.com"], "subject": "s", "body": "b"}}}
    )  # fmt: skip


def deliver(
    trigger: Trigger, sender: Sender, *, times: int = 1, breaker: CircuitBreaker | None = None
) -> DeliveryOutcome:
    """Deliver ``times`` (up to 3 attempts each) through ``sender``, closed afterwards; the
    last outcome."""

    async def run() -> DeliveryOutcome:
        deliverer = Deliverer({trigger.id: trigger}, sender, breaker=breaker,
                              retry=RetryPolicy(max_attempts=3, base_delay_s=0.01))  # fmt: skip
        outcome = DeliveryOutcome()
        try:
            for n in range(times):
                job = DeliveryJob(f"trk-{n}", "o", "0001", trigger.id, None,
                                  {"event": {"data": {"t": -12}}}, "br", "a")  # fmt: skip
                outcome = await deliverer.deliver(DeliveryGroup((job,)))
        finally:
            await sender.close()  # type: ignore[attr-defined]
        return outcome

    return asyncio.run(run())


def refused_once(outcome: DeliveryOutcome) -> str:
    """The error of a delivery that failed on its one attempt, with no response kept."""
    [attempt] = outcome.attempts
    assert (attempt.success, attempt.response) == (False, "")
    [(_, reported)] = outcome.failed
    assert reported == f"{attempt.error} after 1 attempt(s)"
    return attempt.error


# ------------------------------------------------------------------------------ HTTP
def test_a_loopback_endpoint_is_refused_once_and_never_contacted(sink: WebhookSink) -> None:
    outcome = deliver(http_trigger(f"{sink.url}/metrics"), AiohttpSender())
    error = refused_once(outcome)
    assert error == REFUSAL.format(
        target="trigger endpoint", host="127.0.0.1", port=sink.port, address="127.0.0.1"
    )
    assert sink.requests == []


@pytest.mark.parametrize(
    "host", ["localhost", "0x7f.0.0.1", "127.1", "2130706433", "[::1]", "[::ffff:127.0.0.1]"]
)
def test_names_and_spellings_of_loopback_are_refused(sink: WebhookSink, host: str) -> None:
    outcome = deliver(http_trigger(f"http://{host}:{sink.port}/"), AiohttpSender())
    error = refused_once(outcome)
    assert "loopback address" in error or "not a canonical IP address" in error
    assert sink.requests == []


def test_refusals_do_not_open_the_circuit(sink: WebhookSink) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=60)
    outcome = deliver(http_trigger(sink.url), AiohttpSender(), times=3, breaker=breaker)
    assert "a loopback address" in refused_once(outcome)  # the reason, not "circuit open"


def test_a_redirect_to_a_refused_address_is_refused_on_that_hop() -> None:
    allowed = EgressPolicy.allowing(["127.0.0.2/32"])  # the endpoint, but not 127.0.0.1
    with Server("127.0.0.1", ok) as inner:  # what the redirect is after (a metrics port)
        for location in (f"{inner.url}/x", f"http://localhost:{inner.port}/x"):
            with Server("127.0.0.2", redirect_to(location)) as outer:
                error = refused_once(
                    deliver(http_trigger(outer.url), AiohttpSender(policy=allowed))
                )
                assert error.startswith(f"redirected to {location}: trigger endpoint ")
                assert "a loopback address; allow it with triggers.allow_networks" in error
                assert len(outer.seen) == 1
        assert inner.seen == []


def test_redirects_in_allowed_networks_are_followed_without_credentials_across_origins() -> None:
    policy = EgressPolicy.allowing(["127.0.0.0/8"])
    with (
        Server("127.0.0.2", ok) as inner,
        Server("127.0.0.1", redirect_to(f"{inner.url}/in", 307)) as outer,
    ):
        outcome = deliver(http_trigger(outer.url), AiohttpSender(policy=policy))
        assert [a.success for a in outcome.attempts] == [True]
        assert outer.seen[0]["headers"]["Authorization"] == "Bearer t0k"
        [hop] = inner.seen
        assert (hop["method"], hop["path"], hop["body"]) == ("POST", "/in", b'{"t":"-12"}')
        assert "Authorization" not in hop["headers"]  # another origin: the token stays home
    with Server("127.0.0.1", redirect_to("/again")) as loop:
        outcome = deliver(http_trigger(loop.url), AiohttpSender(policy=policy))
        assert [(a.success, a.error) for a in outcome.attempts] == [(False, "HTTP 302")]
        assert len(loop.seen) == 4  # the request and 3 redirects, then the 302 is the answer


def test_the_allowlist_setting_lets_a_delivery_through(
    sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = Endpoints("", "", None, None, None, None, None)
    monkeypatch.delenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", raising=False)
    refused = deliver(http_trigger(sink.url), Wiring(load_settings(), endpoints).sender())
    assert "a loopback address" in refused_once(refused) and sink.requests == []
    monkeypatch.setenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", '["127.0.0.1/32"]')
    allowed = deliver(http_trigger(sink.url), Wiring(load_settings(), endpoints).sender())
    assert [a.success for a in allowed.attempts] == [True]
    assert [r["body"] for r in sink.requests] == [{"t": "-12"}]


def test_only_the_first_2_kib_of_a_response_are_read() -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.end_headers()  # no length: the body lasts as long as the connection
        handler.wfile.write(b"x" * 1_000_000)
        handler.wfile.flush()
        server.stop.wait(10)  # and never ends

    async def send(url: str) -> SendResult:
        sender = AiohttpSender(policy=LOOPBACK)
        try:
            return await sender(HttpRequest("GET", url, timeout_s=5.0))
        finally:
            await sender.close()

    with Server("127.0.0.1", endless) as server:
        started = time.monotonic()
        result = asyncio.run(send(server.url))
        assert time.monotonic() - started < 4  # it did not wait for the rest
    assert result.status == 200 and result.body == "x" * RESPONSE_KEPT_BYTES


# ------------------------------------------------------------------------------ SMTP
def test_smtp_to_loopback_is_refused_by_default_and_allowed_by_the_allowlist(
    mail: MailSink,
) -> None:
    error = refused_once(deliver(email_trigger("127.0.0.1", mail.port), SmtpSender()))
    assert error == REFUSAL.format(
        target="SMTP server", host="127.0.0.1", port=mail.port, address="127.0.0.1"
    )
    assert "a loopback address" in refused_once(
        deliver(email_trigger("localhost", mail.port), SmtpSender())
    )
    assert mail.mails == []
    for host in ("127.0.0.1", "localhost"):  # a name connects to the address that was checked
        outcome = deliver(email_trigger(host, mail.port), SmtpSender(policy=LOOPBACK))
        assert [a.success for a in outcome.attempts] == [True]
    assert len(mail.mails) == 2


def test_smtp_over_tls_checks_the_certificate_against_the_name_not_the_address(
    tmp_path: Path,
) -> None:
    """The connection goes to the address that was checked, the certificate check to the name
    the trigger gave (a certificate for ``localhost`` does not cover ``127.0.0.1``)."""
    server_tls, client_tls = tls_contexts_for("localhost", tmp_path)

    class Accept:
        async def handle_DATA(self, *args: object) -> str:
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(Accept(), hostname="127.0.0.1", port=port, ssl_context=server_tls)
    controller.start()
    try:
        client = _GuardedSMTPSSL("localhost", port, policy=LOOPBACK, timeout=5, context=client_tls)
        assert client.ehlo()[0] == 250
        client.quit()
        with pytest.raises(
            ssl.SSLCertVerificationError, match=re.escape("not valid for '127.0.0.1'")
        ):
            _GuardedSMTPSSL("127.0.0.1", port, policy=LOOPBACK, timeout=5, context=client_tls)
        with pytest.raises(EgressRefused):
            _GuardedSMTPSSL("localhost", port, policy=EgressPolicy(), timeout=5, context=client_tls)
    finally:
        controller.stop()


def tls_contexts_for(name: str, folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``name`` (DNS only), and a client
    context that trusts it and checks host names."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


# -------------------------------------------------------------------------- settings
def test_settings_refuse_an_invalid_network_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=re.escape("'10.0.0.0/33' is not an IP network")):
        load_settings(triggers={"allow_networks": ["10.0.0.0/33"]})
    monkeypatch.setenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", '["127.0.0.1/32", "intranet"]')
    with pytest.raises(SettingsError, match="'intranet' is not an IP network"):
        load_settings()
    monkeypatch.setenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", '["127.0.0.1", "10.1.2.3/8"]')
    triggers = load_settings().triggers
    assert triggers.allow_networks == ("127.0.0.1/32", "10.0.0.0/8")
    assert triggers.egress_policy().allows("127.0.0.1")
    monkeypatch.delenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS")
    default = load_settings().triggers
    assert default.allow_networks == () and not default.egress_policy().allows("127.0.0.1")
