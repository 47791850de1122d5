"""TokenStore in memory: the twin of the file and MongoDB token stores, for unit tests."""

from __future__ import annotations

import threading
from datetime import datetime

from eventray.pipeline.management.tokens import revoked_copy
from eventray.pipeline.ports import TokenRecord, TokenStore

__all__ = ["MemoryTokenStore"]


class MemoryTokenStore(TokenStore):
    """Tokens in a dictionary by id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, TokenRecord] = {}

    def add(self, record: TokenRecord) -> None:
        with self._lock:
            if record.id in self._records or self._by_hash(record.token_hash) is not None:
                raise ValueError(f"token {record.id!r} exists already")
            self._records[record.id] = record

    def find(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return self._by_hash(token_hash)

    def get(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            return self._records.get(token_id)

    def all(self) -> list[TokenRecord]:
        with self._lock:
            return list(self._records.values())

    def revoke(self, token_id: str, at: datetime) -> TokenRecord | None:
        with self._lock:
            record = self._records.get(token_id)
            if record is None:
                return None
            self._records[token_id] = revoked_copy(record, at)
            return self._records[token_id]

    def close(self) -> None:
        """Nothing to release."""

    def _by_hash(self, token_hash: str) -> TokenRecord | None:
        return next((r for r in self._records.values() if r.token_hash == token_hash), None)
