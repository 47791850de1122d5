"""The web console's files, served by the management API at ``/console/``.

The console is build-free: plain HTML, CSS and ES modules shipped as package data
(``actors/console/``), so nothing is built or fetched on a user's machine and it works without
internet. Every answer carries a strict Content Security Policy (no inline script, everything
from this origin), so a value shown on a page (an event's field, an error) can never run as
code; the pages talk only to the management API of the same origin, with the user's token.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONSOLE_PATH", "CSP", "console_dir", "mount_console"]

CONSOLE_PATH = "/console"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def console_dir() -> Path:
    """Where the console's files are (inside the installed package)."""
    return Path(str(resources.files("eventray.actors") / "console"))


class _Headers:
    """Adds the security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` (``/console`` redirects there)."""

    @app.get(CONSOLE_PATH, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE_PATH}/", status_code=308)

    files = StaticFiles(directory=console_dir(), html=True)
    app.mount(f"{CONSOLE_PATH}/", _Headers(files), name="console")
