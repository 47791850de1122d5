"""Ingest-only API tokens at the ingress: the ``apiToken`` data-source auth.

A data source with ``auth: {type: apiToken}`` takes ``Authorization: Bearer ert_...`` tokens
made by ``eventray tokens create --role ingest`` (or ``POST /api/v1/manage/tokens``): not
revoked, not expired, of role ``ingest``, and whose organization's subtree holds the data
source's organization. Only ``ingest`` tokens: a device or gateway holds its token where it
can leak, so the token it holds must be one that can do nothing but send events, and an
admin's token pasted onto a device is refused rather than silently accepted.

Why a cache: every request checks its token, and the token store may be a database; a record
is kept for ``ttl_s`` (2 s by default), so a revocation takes effect within that, and an
unknown token is looked up again after the same time (a flood of random tokens costs one
store lookup per distinct token per ``ttl_s``, bounded by ``capacity``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from eventray.pipeline.management.scope import covers
from eventray.pipeline.management.tokens import PREFIX, hash_token
from eventray.pipeline.ports import TokenRecord, TokenStore

__all__ = ["IngestTokens"]


class IngestTokens:
    """Checks presented tokens against a :class:`TokenStore`, with a short cache.

    Args:
        store: where tokens are kept (read only here).
        ttl_s: how long a lookup (found or not) is reused.
        capacity: how many lookups are kept (least recently used go first).
        now: the current time (UTC), for expiry.
        monotonic: the clock of the cache.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        ttl_s: float = 2.0,
        capacity: int = 10_000,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._now = now or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._cache: OrderedDict[str, tuple[float, TokenRecord | None]] = OrderedDict()
        self.lookups = 0
        """How many times the store was asked (a test and the status read it)."""

    async def refusal(self, token: str, *, org_id: str, org_paths: Mapping[str, str]) -> str | None:
        """None when ``token`` may send events to a data source of ``org_id``; else why not.

        Args:
            token: as presented (after ``Bearer``).
            org_id: the data source's organization.
            org_paths: every organization's pathKey (the catalog's).
        """
        if not token.startswith(PREFIX):
            return "not an eventray API token (ert_...)"
        record = await self._record(hash_token(token))
        if record is None:
            return "unknown API token"
        if record.revoked is not None:
            return "API token revoked"
        if record.expires is not None and record.expires <= self._now():
            return "API token expired"
        if record.role != "ingest":
            return f"API token role {record.role!r} may not send events (only ingest tokens may)"
        scope, target = org_paths.get(record.org_id), org_paths.get(org_id)
        if scope is None or target is None or not covers(scope, target):
            return "the API token's organization does not hold this data source"
        return None

    async def _record(self, token_hash: str) -> TokenRecord | None:
        at = self._monotonic()
        hit = self._cache.get(token_hash)
        if hit is not None and at - hit[0] < self.ttl_s:
            self._cache.move_to_end(token_hash)
            return hit[1]
        self.lookups += 1
        # The store may be a database (or a file re-read after a write): not on the loop.
        record = await asyncio.to_thread(self.store.find, token_hash)
        self._cache[token_hash] = (at, record)
        self._cache.move_to_end(token_hash)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return record

    def close(self) -> None:
        self.store.close()
