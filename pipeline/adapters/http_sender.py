"""The HTTP transport of trigger deliveries (HTTP, Slack, Teams webhooks), over aiohttp.

Every connection goes through the :class:`~eventray.pipeline.adapters.egress.EgressPolicy`:
hostnames through a resolver that drops the addresses the policy refuses (so the check is on
what the connection will use, not on the name), IP literals before the request (aiohttp does
not resolve them). Redirects are followed here, not by aiohttp, so each hop's host is checked
the same way and credentials are not carried to another origin.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import HttpRequest

__all__ = [
    "MAX_REDIRECTS",
    "RESPONSE_KEPT_BYTES",
    "AiohttpSender",
    "GuardedResolver",
    "check_literal",
]

RESPONSE_KEPT_BYTES = 2048
"""How much of a response body is read (and so can be stored): enough to see an error."""

MAX_REDIRECTS = 3
"""Redirects followed for one delivery; the answer after the last is the result."""

_TARGET = "trigger endpoint"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ORIGIN_BOUND = ("Authorization", "Cookie", "Proxy-Authorization")


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the addresses ``policy`` allows.

    Raises :class:`EgressRefused` when none is left; aiohttp passes it up as the ``os_error``
    of a ``ClientConnectorError`` without connecting. ``target`` names what connects in the
    refusal (a trigger endpoint, a JWKS URL).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        inner: AbstractResolver | None = None,
        *,
        target: str = _TARGET,
    ) -> None:
        self.policy = policy
        self.target = target
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = set(self.policy.check(self.target, host, port, [r["host"] for r in results]))
        return [r for r in results if r["host"] in allowed]

    async def close(self) -> None:
        await self._inner.close()


def check_literal(policy: EgressPolicy, url: URL, *, target: str = _TARGET) -> None:
    """aiohttp connects to an IP literal without asking the resolver: check it here.

    Hostnames are left to :class:`GuardedResolver`, which sees what they resolve to.
    """
    host = url.host or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or host.replace(".", "").isdigit():  # what aiohttp takes for a literal
            raise DeliveryRefused(f"{target} {host!r} is not a canonical IP address") from None
        return
    policy.check(target, host, url.port or 0, [host])


def _next_url(current: URL, location: str) -> URL:
    target = current.join(URL(location))
    if target.scheme not in ("http", "https") or not target.host:
        raise DeliveryRefused(f"redirect from {current} to {location!r}: not an http(s) URL")
    return target


class AiohttpSender:
    """Sends :class:`HttpRequest`s; one session (connection pool) for its lifetime.

    Each hop of a redirect has the request's whole timeout.

    Args:
        policy: where deliveries may connect (default: public addresses only).
        limit: connections open at once.
    """

    def __init__(self, *, policy: EgressPolicy | None = None, limit: int = 64) -> None:
        self.policy = policy or EgressPolicy()
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The session every delivery over HTTP (and WebSocket) uses: its resolver applies the
        egress policy."""
        return self._open()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, resolver=GuardedResolver(self.policy)
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def __call__(self, request: HttpRequest) -> SendResult:
        session = self._open()
        url = URL(request.url)
        method, body, headers = request.method, request.body, dict(request.headers)
        timeout = aiohttp.ClientTimeout(total=request.timeout_s)
        try:
            for hop in range(MAX_REDIRECTS + 1):
                check_literal(self.policy, url)
                async with session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECTS and location and hop < MAX_REDIRECTS:
                        # A redirect's body is never read (a connection left with an
                        # unread body is closed, not reused).
                        target = _next_url(url, location)
                        if target.origin() != url.origin():
                            for name in _ORIGIN_BOUND:
                                headers.pop(name, None)
                        if response.status == 303 or (
                            response.status in (301, 302) and method == "POST"
                        ):
                            method, body = "GET", b""
                        url = target
                        continue
                    text = await _kept_text(response)
                    retry_after = response.headers.get("Retry-After")
                    delay = float(retry_after) if retry_after and retry_after.isdigit() else None
                    return SendResult(response.status, text, delay)
        except EgressRefused as exc:
            raise DeliveryRefused(_on_hop(request.url, url, str(exc))) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, EgressRefused):
                raise DeliveryRefused(_on_hop(request.url, url, str(exc.os_error))) from exc
            raise RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable: the last hop returns")  # pragma: no cover

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _on_hop(first: str, url: URL, message: str) -> str:
    """The refusal, naming the redirect that led there when it was not the trigger's URL."""
    return message if str(url) == str(URL(first)) else f"redirected to {url}: {message}"


async def _kept_text(response: aiohttp.ClientResponse) -> str:
    """At most :data:`RESPONSE_KEPT_BYTES` of the body, decoded leniently; the rest unread."""
    kept = bytearray()
    while len(kept) < RESPONSE_KEPT_BYTES:
        chunk = await response.content.read(RESPONSE_KEPT_BYTES - len(kept))
        if not chunk:
            break
        kept += chunk
    try:
        return bytes(kept).decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return bytes(kept).decode("utf-8", errors="replace")
