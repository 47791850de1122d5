"""The NATS transport of trigger deliveries: core NATS publish on a kept connection.

One connection per server URL, opened on first use and kept (opened again when it dropped); a
delivery publishes and flushes, so an attempt succeeds only once the server has the message
(core NATS then hands it to the subscribers present: at most once, nothing kept for absent
ones; a trigger that needs durability points at a subject a JetStream stream captures).

What the egress policy says holds here too: the server's host is resolved and checked before
connecting, and the connection goes to the checked address. A subject in the platform's own
namespaces (``eventray.``, ``$``, ``_INBOX.``) is refused: a trigger must not forge events or
deliveries, even on the embedded server.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.models.routing import RESERVED_SUBJECTS
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import NatsRequest

__all__ = ["NatsSender"]


class NatsSender:
    """Sends :class:`NatsRequest`s.

    Args:
        policy: where deliveries may connect (default: public addresses only).
    """

    def __init__(self, *, policy: EgressPolicy | None = None) -> None:
        self.policy = policy or EgressPolicy()
        self.connects = 0
        self._clients: dict[str, Client] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, request: NatsRequest) -> SendResult:
        if request.subject.startswith(RESERVED_SUBJECTS) or not request.subject.strip():
            raise DeliveryRefused(
                f"NATS subject {request.subject!r} is reserved for the platform or empty"
            )
        client = await self._client(request)
        try:
            await client.publish(request.subject, request.body)
            await client.flush(timeout=max(1, round(request.timeout_s)))
        except (NatsError, TimeoutError) as exc:
            raise RetryableError(f"NATS publish to {request.subject!r}: {exc!r}") from exc
        return SendResult(200, "")

    async def _client(self, request: NatsRequest) -> Client:
        async with self._lock:
            client = self._clients.get(request.server)
            if client is not None and not client.is_closed:
                return client
            url, host = self._checked(request.server)
            try:
                # Few reconnects inside nats-py: a server that is down fails this attempt
                # quickly (the retry policy decides when to try again), and a connection that
                # dropped for good is closed and opened afresh by the next delivery.
                client = await nats.connect(
                    url, connect_timeout=request.timeout_s, max_reconnect_attempts=1,
                    reconnect_time_wait=0.2, tls_hostname=host,
                )  # fmt: skip
            except (NatsError, OSError, TimeoutError) as exc:
                raise RetryableError(f"NATS server {host!r}: {type(exc).__name__}") from exc
            self.connects += 1
            self._clients[request.server] = client
            return client

    def _checked(self, server: str) -> tuple[str, str]:
        """The server URL with its host replaced by a checked address, and the host."""
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        host, port = parts.hostname or "", parts.port or 4222
        try:
            address = self.policy.resolve("NATS server", host, port)[0]
        except EgressRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except OSError as exc:
            raise RetryableError(f"NATS server {host!r} does not resolve: {exc}") from exc
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        literal = f"[{address}]" if ":" in address else address
        netloc = f"{credentials}{literal}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host

    async def close(self) -> None:
        for client in self._clients.values():
            if not client.is_closed:
                await client.close()
        self._clients.clear()
