"""The HTTP transport of trigger deliveries (HTTP, Slack, Teams webhooks), over aiohttp."""

from __future__ import annotations

import aiohttp

from eventray.pipeline.errors import RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import HttpRequest

__all__ = ["AiohttpSender"]


class AiohttpSender:
    """Sends :class:`HttpRequest`s; one session (connection pool) for its lifetime."""

    def __init__(self, *, limit: int = 64) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: HttpRequest) -> SendResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._limit))
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=request.timeout_s),
            ) as response:
                text = await response.text(errors="replace")
                retry_after = response.headers.get("Retry-After")
                delay = float(retry_after) if retry_after and retry_after.isdigit() else None
                return SendResult(response.status, text, delay)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(
                f"{request.method} {request.url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
