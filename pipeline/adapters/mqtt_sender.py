"""The MQTT transport of trigger deliveries: publish on one kept connection per broker endpoint.

``aiomqtt`` (paho-mqtt driven by the asyncio loop: no thread per connection, and a publish
awaits the broker's acknowledgement) speaks MQTT 3.1.1, the version every broker takes. One
connection per (host, port, TLS, username) is opened on first use and kept; one that dropped
(a broker restart) is closed and opened again by the next delivery, and a publish that fails
drops its connection so the retry goes out on a fresh one. The client id is random and the
session clean: the broker keeps nothing for eventray between connections, and the retry policy,
not a broker session, decides what is sent again.

QoS 0 succeeds once the message is written to the connection (at most once); QoS 1 and 2 only
once the broker acknowledged it (PUBACK; PUBCOMP for 2). A timeout waiting for it is
retryable, so a message whose acknowledgement was lost can arrive twice (at least once).

Failures: a broker that is down, unreachable, slow or drops the connection is retryable; a
CONNACK that refuses the credentials (bad user name or password, not authorized), the client
(banned) or the protocol is permanent, as the same connect would be refused again. The
broker's host is resolved and checked by the egress policy and the connection goes to the
checked address; over TLS the certificate is still verified against the host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from dataclasses import dataclass
from typing import Any, cast

import aiomqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError, MqttError
from paho.mqtt.reasoncodes import ReasonCode

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.models.trigger import mqtt_topic_problem
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import MqttRequest

__all__ = ["REFUSED_FOR_GOOD", "MqttSender"]

REFUSED_FOR_GOOD = frozenset({1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
"""CONNACK codes a retry cannot change: MQTT 3.1.1's refused protocol version (1), client id
(2), bad user name or password (4), not authorized (5), and their MQTT 5 reason codes
(paho reports a 3.1.1 refusal as the MQTT 5 code: 4 as 0x86, 5 as 0x87), plus banned (0x8A)
and bad authentication method (0x8C). Server unavailable or busy are worth a retry."""

_Key = tuple[str, int, bool, str | None]


@dataclass(slots=True)
class _Link:
    client: aiomqtt.Client
    password: str | None


class _NamedTLS:
    """A TLS context that verifies the certificate against the broker's name while the socket
    goes to the address the egress policy checked (paho would use the address as the name).

    paho only calls ``wrap_socket`` and reads ``check_hostname``, so this wrapper stands in for
    the ``ssl.SSLContext`` it expects.
    """

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        self._context = context
        self._server_name = server_name
        self.check_hostname = context.check_hostname

    def wrap_socket(self, sock: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self._server_name
        wrapped = self._context.wrap_socket(sock, **kwargs)
        try:
            # Here rather than in paho (which then finds it done): a handshake that fails,
            # e.g. on a certificate that does not verify, must close its socket, and paho's
            # does not.
            wrapped.do_handshake()
        except BaseException:
            wrapped.close()
            raise
        return wrapped


class MqttSender:
    """Sends :class:`MqttRequest`s.

    Args:
        policy: where deliveries may connect (default: public addresses only).
        tls_context: verifies brokers over TLS (default: the system's trusted certificates).
    """

    def __init__(
        self, *, policy: EgressPolicy | None = None, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy or EgressPolicy()
        self.tls_context = tls_context
        self.connects = 0
        self._links: dict[_Key, _Link] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def __call__(self, request: MqttRequest) -> SendResult:
        problem = mqtt_topic_problem(request.topic)
        if problem is not None:
            raise DeliveryRefused(f"MQTT topic {request.topic!r} {problem}")
        key: _Key = (request.host, request.port, request.tls, request.username)
        client = await self._client(key, request)
        try:
            await client.publish(
                request.topic, request.body, qos=request.qos, timeout=request.timeout_s
            )
        except MqttError as exc:
            await self._drop(key, client)
            raise RetryableError(
                f"MQTT publish to {request.topic!r} on {_where(request)}: {_reason(exc)}"
            ) from exc
        return SendResult(200, "")

    async def _client(self, key: _Key, request: MqttRequest) -> aiomqtt.Client:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one connect per endpoint at a time; other endpoints do not wait
            link = self._links.get(key)
            if link is not None:
                if _connected(link.client) and link.password == request.password:
                    return link.client
                await self._drop(key, link.client)  # dropped, or its password was rotated
            client = await self._connect(request)
            self.connects += 1
            self._links[key] = _Link(client, request.password)
            return client

    async def _connect(self, request: MqttRequest) -> aiomqtt.Client:
        try:
            addresses = await asyncio.to_thread(
                self.policy.resolve, "MQTT broker", request.host, request.port
            )
        except EgressRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except OSError as exc:
            raise RetryableError(f"MQTT broker {request.host!r} does not resolve: {exc}") from exc
        tls: Any = None
        if request.tls:
            base = self.tls_context or ssl.create_default_context()
            tls = _NamedTLS(base, request.host)
        client = aiomqtt.Client(
            addresses[0], request.port, username=request.username, password=request.password,
            identifier=f"eventray-{secrets.token_hex(8)}", clean_session=True,
            timeout=request.timeout_s, tls_context=cast(ssl.SSLContext | None, tls),
        )  # fmt: skip
        # aiomqtt's timeout bounds the wait for CONNACK; the TCP (and TLS) connect has paho's.
        client._client.connect_timeout = request.timeout_s
        # Deliveries in flight on one connection are the dispatcher's concurrency at most (64
        # by default), bounded there: aiomqtt's warning past 10 would log a line per publish.
        client.pending_calls_threshold = 1024
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if _code(exc.rc) in REFUSED_FOR_GOOD:
                raise PermanentError(
                    f"MQTT broker {_where(request)} refused the connection: {_reason(exc)}"
                ) from exc
            raise RetryableError(
                f"MQTT broker {_where(request)} refused the connection: {_reason(exc)}"
            ) from exc
        except MqttError as exc:
            raise RetryableError(f"MQTT broker {_where(request)}: {_reason(exc)}") from exc
        return client

    async def _drop(self, key: _Key, client: aiomqtt.Client) -> None:
        link = self._links.get(key)
        if link is not None and link.client is client:
            del self._links[key]
        await _close(client)

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await _close(link.client)


def _connected(client: aiomqtt.Client) -> bool:
    """Whether the client's connection is up (aiomqtt resolves ``_disconnected`` when it
    drops; reading its exception marks it seen, so asyncio does not log it as lost)."""
    gone = client._disconnected
    if not gone.done():
        return True
    if not gone.cancelled():
        gone.exception()
    return False


async def _close(client: aiomqtt.Client) -> None:
    """Disconnect, waiting at most a second for the broker: a dead connection is dropped."""
    with contextlib.suppress(MqttError, OSError, TimeoutError):
        await asyncio.wait_for(client.__aexit__(None, None, None), 1.0)
    _connected(client)


def _code(rc: int | ReasonCode | None) -> int | None:
    return rc.value if isinstance(rc, ReasonCode) else rc


def _reason(exc: MqttError) -> str:
    """The driver's reason, never anything that could hold a credential (none of aiomqtt's
    messages do: codes, their names, socket errors)."""
    if isinstance(exc, MqttCodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _where(request: MqttRequest) -> str:
    host = f"[{request.host}]" if ":" in request.host else request.host
    return f"{host}:{request.port}"
