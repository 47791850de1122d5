"""Fetches JSON Web Key Sets over HTTP(S) with aiohttp, for the ingress's OAuth2 data sources.

A JWKS URL is written by a tenant and fetched by the ingress, so it goes through an
:class:`~eventray.pipeline.adapters.egress.EgressPolicy` (setting
``ingress.jwks_allow_networks``): hostnames through the guarded resolver, IP literals before the
request; loopback, private, link-local (cloud metadata) and the other non-public addresses are
refused unless allowed. Plain ``http://`` is refused unless ``ingress.jwks_allow_http`` (keys
fetched without TLS can be replaced on the way). Redirects are not followed (an answer other
than 200 is an outage of the set), the body is read up to ``max_bytes`` and the whole exchange
has ``timeout_s``; no proxy from the environment, no cookies.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.adapters.http_sender import GuardedResolver, check_literal
from eventray.pipeline.jwks import JwksDocument, JwksFetch, JwksRefused, JwksUnavailable

__all__ = ["TARGET", "AiohttpJwksFetch"]

TARGET = "JWKS URL"
_ACCEPT = "application/jwk-set+json, application/json"


class AiohttpJwksFetch(JwksFetch):
    """One session (connection pool) for every key set the ingress fetches.

    Args:
        policy: where it may connect (the ingress's own allowlist).
        timeout_s: for one fetch, from connecting to the last byte.
        max_bytes: larger bodies are refused (an outage of the set).
        allow_http: accept ``http://`` URLs (tests, a provider inside an allowed network).
        limit: connections open at once.
    """

    def __init__(
        self,
        *,
        policy: EgressPolicy | None = None,
        timeout_s: float = 5.0,
        max_bytes: int = 128 * 1024,
        allow_http: bool = False,
        limit: int = 16,
    ) -> None:
        self.policy = policy or EgressPolicy()
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.allow_http = allow_http
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, resolver=GuardedResolver(self.policy, target=TARGET)
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def __call__(self, url: str) -> JwksDocument:
        try:
            target = URL(url)
        except ValueError as exc:
            raise JwksRefused(f"{TARGET} {url!r} is not a URL: {exc}") from exc
        if target.scheme not in ("https", "http") or not target.host:
            raise JwksRefused(f"{TARGET} {url!r} is not an https URL")
        if target.scheme == "http" and not self.allow_http:
            raise JwksRefused(
                f"{TARGET} {url} is plain http (keys must come over TLS; allow it with "
                f"ingress.jwks_allow_http)"
            )
        try:
            check_literal(self.policy, target, target=TARGET)
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with self._open().get(
                target, allow_redirects=False, timeout=timeout, headers={"Accept": _ACCEPT}
            ) as response:
                if response.status != 200:
                    raise JwksUnavailable(f"{TARGET} {url} answered HTTP {response.status}")
                length = response.content_length
                if length is not None and length > self.max_bytes:
                    raise JwksUnavailable(self._too_large(url))
                body = await response.content.read(self.max_bytes + 1)
                while len(body) <= self.max_bytes:
                    more = await response.content.read(self.max_bytes + 1 - len(body))
                    if not more:
                        break
                    body += more
                if len(body) > self.max_bytes:
                    raise JwksUnavailable(self._too_large(url))
                return JwksDocument(body, response.headers.get("Cache-Control"))
        except (EgressRefused, DeliveryRefused) as exc:
            raise JwksRefused(str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, EgressRefused):
                raise JwksRefused(str(exc.os_error)) from exc
            raise JwksUnavailable(f"{TARGET} {url}: {type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise JwksUnavailable(f"{TARGET} {url}: {type(exc).__name__}: {exc}") from exc

    def _too_large(self, url: str) -> str:
        return f"{TARGET} {url} answered more than {self.max_bytes} bytes"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
