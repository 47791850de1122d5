"""Start-once for actors whose ``start`` the supervisor calls on every health check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["StartOnce"]


class StartOnce:
    """Runs an actor's start until it succeeds once.

    Why not a boolean set before starting: a start that fails half way (NATS not up yet) must
    be tried again by the next health check, and two concurrent health checks must not start
    the work twice. The lock serialises them; ``done`` is set only after success.
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.done = False

    async def run(self, start: Callable[[], Awaitable[None]]) -> None:
        async with self._lock:
            if not self.done:
                await start()
                self.done = True
