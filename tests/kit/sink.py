"""A loopback webhook sink: records what triggers deliver (for the demo and the tests)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["WebhookSink"]


@dataclass
class WebhookSink:
    """An HTTP server on 127.0.0.1 (free port) that answers 200 and keeps every request.

    ``fail_first`` makes the first N requests answer 503, to exercise retries; ``echo`` makes
    every answer repeat the request's URL and body (what a careless endpoint does with a token).
    """

    fail_first: int = 0
    echo: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = body.decode(errors="replace")
        self.requests.append(
            {
                "path": request.path,
                "method": request.method,
                "headers": dict(request.headers),
                "body": parsed,
            }
        )
        echoed = f" {request.url} {body.decode(errors='replace')}" if self.echo else ""
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="try again" + echoed, headers={"Retry-After": "0"})
        return web.Response(status=200, text="ok" + echoed)

    def start(self) -> WebhookSink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="webhook-sink")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
