"""TokenStore in ``<data_dir>/tokens.json``: the embedded default.

Shaped like the file config store: one JSON file replaced atomically (``os.replace`` after an
fsync) under an exclusive ``flock``, so the CLI (``eventray tokens create`` works without a
running stack) and the API actor can both write it. The file is created ``0600`` and kept so:
it holds only hashes, but which organizations and roles exist is the owner's business, and a
writable file would let anyone add a token. Every request checks a token, so the parsed file
is kept while its ``stat`` says it is the same file (each write makes a new inode).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import orjson

from eventray.pipeline.adapters.durable_file import replace_durably
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.management.tokens import record_from_json, record_to_json, revoked_copy
from eventray.pipeline.ports import TokenRecord, TokenStore

__all__ = ["TOKENS_FILE", "FileTokenStore"]

TOKENS_FILE: Final = "tokens.json"
_FORMAT: Final = 1


class FileTokenStore(TokenStore):
    """Tokens in ``path`` (by default ``<data_dir>/tokens.json``), its lock beside it.

    Args:
        path: the file; its directory is created (0700) if missing.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = self.path.with_name(f".{self.path.name}.lock")
        self._cache: tuple[tuple[int, int, int], dict[str, TokenRecord]] | None = None
        self._by_hash: dict[str, TokenRecord] = {}
        self._mutex = threading.Lock()

    def add(self, record: TokenRecord) -> None:
        with self._locked():
            records = self._records()
            if record.id in records or any(
                r.token_hash == record.token_hash for r in records.values()
            ):
                raise ValueError(f"token {record.id!r} exists already")
            records[record.id] = record
            self._write(records)

    def find(self, token_hash: str) -> TokenRecord | None:
        """One dictionary lookup (every API request asks), on the cached parse of the file."""
        self._records()
        with self._mutex:
            return self._by_hash.get(token_hash)

    def get(self, token_id: str) -> TokenRecord | None:
        return self._records().get(token_id)

    def all(self) -> list[TokenRecord]:
        return list(self._records().values())

    def revoke(self, token_id: str, at: datetime) -> TokenRecord | None:
        with self._locked():
            records = self._records()
            record = records.get(token_id)
            if record is None:
                return None
            records[token_id] = revoked_copy(record, at)
            self._write(records)
            return records[token_id]

    def close(self) -> None:
        """Nothing to release: no handle stays open between calls."""

    def _records(self) -> dict[str, TokenRecord]:
        """The file's tokens by id (a fresh dict; the parsed file is cached by its stat)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {}
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._mutex:
            if self._cache is None or self._cache[0] != seen:
                try:
                    loaded = orjson.loads(self.path.read_bytes())
                    if loaded.get("format") != _FORMAT:
                        raise ValueError(f"unknown format {loaded.get('format')!r}")
                    parsed = {
                        r.id: r for r in (record_from_json(item) for item in loaded["tokens"])
                    }
                except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
                    raise PermanentError(f"token file {self.path} is unreadable: {exc}") from exc
                self._cache = (seen, parsed)
                self._by_hash = {r.token_hash: r for r in parsed.values()}
            return dict(self._cache[1])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, records: dict[str, TokenRecord]) -> None:
        body = orjson.dumps(
            {"format": _FORMAT, "tokens": [record_to_json(r) for r in records.values()]}
        )
        replace_durably(self.path, body, prefix=".tokens-")
