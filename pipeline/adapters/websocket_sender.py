"""The WebSocket transport of trigger deliveries: text messages on kept connections.

One connection per URL and headers, opened on first use through the HTTP sender's session
(so its egress policy applies: the guarded resolver, IP literals checked) and kept; a message
is sent on the open connection. WebSocket has no acknowledgement: a message handed to an open
connection counts as delivered (at most once). A connection the peer closed is opened again by
the next delivery; a send that fails is retryable and retried on a fresh connection.
"""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressRefused
from eventray.pipeline.adapters.http_sender import AiohttpSender, check_literal
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import WebSocketRequest

__all__ = ["WebSocketSender"]


class WebSocketSender:
    """Sends :class:`WebSocketRequest`s over ``http``'s session (and its egress policy)."""

    def __init__(self, http: AiohttpSender) -> None:
        self.http = http
        self.connects = 0
        self._sockets: dict[
            tuple[str, tuple[tuple[str, str], ...]], aiohttp.ClientWebSocketResponse
        ] = {}
        self._lock = asyncio.Lock()

    async def __call__(self, request: WebSocketRequest) -> SendResult:
        key = (request.url, tuple(sorted(request.headers.items())))
        socket = await self._socket(key, request)
        try:
            await asyncio.wait_for(socket.send_str(request.message), request.timeout_s)
        except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError) as exc:
            self._sockets.pop(key, None)
            await socket.close()
            raise RetryableError(f"WebSocket send to {request.url}: {type(exc).__name__}") from exc
        return SendResult(200, "")

    async def _socket(
        self, key: tuple[str, tuple[tuple[str, str], ...]], request: WebSocketRequest
    ) -> aiohttp.ClientWebSocketResponse:
        async with self._lock:
            socket = self._sockets.pop(key, None)
            if socket is not None:
                if not socket.closed:
                    self._sockets[key] = socket
                    return socket
                await socket.close()  # closed by the peer: release its connection
            url = URL(request.url)
            try:
                check_literal(self.http.policy, url)
                socket = await self.http.session().ws_connect(
                    url, headers=request.headers,
                    timeout=aiohttp.ClientWSTimeout(ws_close=request.timeout_s),
                )  # fmt: skip
            except EgressRefused as exc:
                raise DeliveryRefused(str(exc)) from exc
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, EgressRefused):
                    raise DeliveryRefused(str(exc.os_error)) from exc
                raise RetryableError(f"WebSocket {request.url}: {type(exc).__name__}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RetryableError(
                    f"WebSocket {request.url}: {type(exc).__name__}: {exc}"
                ) from exc
            self.connects += 1
            self._sockets[key] = socket
            return socket

    async def close(self) -> None:
        for socket in self._sockets.values():
            await socket.close()
        self._sockets.clear()
