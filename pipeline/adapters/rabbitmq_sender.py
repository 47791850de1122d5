"""The RabbitMQ transport of trigger deliveries: AMQP 0-9-1 publish with publisher confirms.

One robust connection (``aio-pika``: it reconnects by itself after the broker restarts or the
network drops) per (host, port, vhost, username), opened on first use and kept, with one
channel in confirm mode. Every message is persistent (delivery mode 2, so a durable queue keeps
it across a broker restart) and published ``mandatory``: the attempt succeeds once the broker
confirmed it (``basic.ack``), and a message no queue takes is returned and fails the delivery
instead of vanishing.

Nothing is declared: the exchange or queue is the tenant's, with the type, durability and
arguments (TTL, dead-lettering, quorum) it chose. Declaring it here would either fail on a
mismatch (``PRECONDITION_FAILED``) or, where it does not exist yet, create one with
eventray's guesses that the tenant then has to find and delete; a missing exchange is
instead reported (``NOT_FOUND``).

Failures: the broker down, unreachable, slow to confirm, refusing (``basic.nack``) or dropping
the connection is retryable; refused credentials (``ACCESS_REFUSED``), a vhost that does not
exist or is not permitted, a missing exchange, a message no queue takes (``NO_ROUTE``) and a
publish the user may not make are permanent. The broker's host is resolved and checked by the
egress policy, and the connection goes to the checked address.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import RabbitMqRequest

__all__ = ["RabbitMqSender"]

_Key = tuple[str, int, str, str]

_REFUSED_REQUEST = (
    aiormq.exceptions.ChannelAccessRefused,  # 403: the user may not publish there
    aiormq.exceptions.ChannelNotFoundEntity,  # 404: no such exchange
    aiormq.exceptions.ChannelPreconditionFailed,  # 406
)
_REFUSED_CONNECTION = (
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ProbableAuthenticationError,  # ACCESS_REFUSED at login
    aiormq.exceptions.ConnectionNotAllowed,  # 530: vhost not permitted
    # RabbitMQ answers a vhost that does not exist with connection.close where aiormq
    # expects connection.open-ok, which it reports as an invalid frame.
    aiormq.exceptions.ProtocolSyntaxError,
    aiormq.exceptions.IncompatibleProtocolError,
)


@dataclass(slots=True)
class _Link:
    connection: AbstractRobustConnection
    channel: AbstractRobustChannel
    password: str


class RabbitMqSender:
    """Sends :class:`RabbitMqRequest`s.

    Args:
        policy: where deliveries may connect (default: public addresses only).
        reconnect_interval_s: how long a robust connection waits between reconnects.
    """

    def __init__(
        self, *, policy: EgressPolicy | None = None, reconnect_interval_s: float = 1.0
    ) -> None:
        self.policy = policy or EgressPolicy()
        self.reconnect_interval_s = reconnect_interval_s
        self.connects = 0
        self._links: dict[_Key, _Link] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def __call__(self, request: RabbitMqRequest) -> SendResult:
        channel = await self._channel(request)
        where = _where(request)
        message = aio_pika.Message(
            request.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=request.message_id or None, app_id="eventray",
        )  # fmt: skip
        try:
            # A robust channel is not usable while its connection is re-established, or while it
            # reopens after the broker closed it (a publish to a missing exchange does that).
            await asyncio.wait_for(channel.ready(), request.timeout_s)
            exchange = (
                await channel.get_exchange(request.exchange, ensure=False)
                if request.exchange
                else channel.default_exchange
            )
            await exchange.publish(
                message, request.routing_key, mandatory=True, timeout=request.timeout_s
            )
        except aiormq.exceptions.PublishError as exc:  # returned: no queue took it
            reply = getattr(exc.message.delivery, "reply_text", "") if exc.message else ""
            raise PermanentError(
                f"AMQP {where}: no queue took the message ({reply or 'returned'}) for exchange "
                f"{request.exchange or '(default)'!s} and routing key {request.routing_key!r}"
            ) from exc
        except _REFUSED_REQUEST as exc:
            raise PermanentError(f"AMQP {where}: {_reason(exc)}") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            # basic.nack, a connection that dropped, a channel still reopening, no confirm
            raise RetryableError(f"AMQP publish on {where}: {_reason(exc)}") from exc
        return SendResult(200, "")

    async def _channel(self, request: RabbitMqRequest) -> AbstractRobustChannel:
        key: _Key = (request.host, request.port, request.vhost, request.username)
        async with self._locks.setdefault(key, asyncio.Lock()):
            link = self._links.get(key)
            if link is not None:
                if not link.connection.is_closed and link.password == request.password:
                    return link.channel
                del self._links[key]  # closed, or its password was rotated
                await link.connection.close()
            link = await self._connect(request)
            self.connects += 1
            self._links[key] = link
            return link.channel

    async def _connect(self, request: RabbitMqRequest) -> _Link:
        where = _where(request)
        try:
            addresses = await asyncio.to_thread(
                self.policy.resolve, "AMQP broker", request.host, request.port
            )
        except EgressRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except OSError as exc:
            raise RetryableError(f"AMQP broker {request.host!r} does not resolve: {exc}") from exc
        try:
            connection = await aio_pika.connect_robust(
                host=addresses[0], port=request.port, virtualhost=request.vhost,
                login=request.username, password=request.password, timeout=request.timeout_s,
                reconnect_interval=self.reconnect_interval_s,
                client_properties={"connection_name": "eventray triggers"},
            )  # fmt: skip
        except _REFUSED_CONNECTION as exc:
            raise PermanentError(
                f"AMQP broker {where} refused the connection (user {request.username!r}, vhost "
                f"{request.vhost!r}): {_reason(exc)}"
            ) from exc
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise RetryableError(f"AMQP broker {where}: {_reason(exc)}") from exc
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except (aiormq.exceptions.AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            await connection.close()
            raise RetryableError(f"AMQP broker {where}: opening a channel: {_reason(exc)}") from exc
        assert isinstance(channel, AbstractRobustChannel)
        return _Link(connection, channel, request.password)

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.connection.close()


def _reason(exc: BaseException) -> str:
    """The broker's or the driver's reason (its reply text, a socket error: never the URL the
    driver built, which holds the password)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(request: RabbitMqRequest) -> str:
    host = f"[{request.host}]" if ":" in request.host else request.host
    return f"{host}:{request.port}"
