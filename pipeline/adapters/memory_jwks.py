"""In-memory JwksFetch: the twin of the aiohttp fetcher, for tests.

Serves the documents it was given per URL, counts the fetches, and can hold every fetch until a
test opens its gate (to see concurrent callers share one fetch).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from eventray.pipeline.jwks import JwksDocument, JwksFetch, JwksUnavailable

__all__ = ["MemoryJwks"]


class MemoryJwks(JwksFetch):
    """Key sets by URL; a URL it was not given is unavailable (as a server that is down)."""

    def __init__(self) -> None:
        self.documents: dict[str, JwksDocument | Exception] = {}
        self.hits: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.closed = False

    def serve(
        self,
        url: str,
        keys: Sequence[Mapping[str, Any]] | bytes,
        *,
        cache_control: str | None = None,
    ) -> None:
        """Answer ``url`` with these JWKs (or this raw body) from now on."""
        body = keys if isinstance(keys, bytes) else orjson.dumps({"keys": list(keys)})
        self.documents[url] = JwksDocument(body, cache_control)

    def fail(self, url: str, error: Exception | None = None) -> None:
        """Fail every fetch of ``url`` from now on (default: connection refused)."""
        self.documents[url] = error or JwksUnavailable(f"{url}: connection refused")

    async def __call__(self, url: str) -> JwksDocument:
        self.hits[url] += 1
        if self.gate is not None:
            await self.gate.wait()
        answer = self.documents.get(url)
        if answer is None:
            raise JwksUnavailable(f"{url}: connection refused")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True
