"""SecretStore in ``<data_dir>/secrets.enc``: the embedded default.

One JSON document, ``{format, revision, secrets: [...], changes: [...]}``, each secret's value
sealed (AES-256-GCM, :mod:`eventray.pipeline.secret_crypto`): the file holds no plain value and
no key, only organizations, names, flags, times, authors and sealed values. Shaped like the
token file: replaced atomically (``os.replace`` after an fsync) under an exclusive ``flock``,
so the API actor and ``eventray secrets`` on the data directory can both write it, created
``0600`` and refused if other users may access it (a writable file would let anyone delete a
secret or put back an older sealed value of it). The parsed file is kept while its ``stat``
says it is the same file, so the lanes' once-a-second question (:meth:`revision`) is a
``stat``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import orjson

from eventray.pipeline.adapters.durable_file import replace_durably
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.ports import Author
from eventray.pipeline.secret_store import (
    SealedSecret,
    SecretChange,
    SecretStore,
    change_from_json,
    change_to_json,
    sealed_from_json,
    sealed_to_json,
)

__all__ = ["SECRETS_STORE_FILE", "FileSecretStore"]

SECRETS_STORE_FILE: Final = "secrets.enc"
_FORMAT: Final = 1


@dataclass(slots=True)
class _State:
    revision: int = 0
    secrets: dict[tuple[str, str], SealedSecret] = field(default_factory=dict)
    changes: list[SecretChange] = field(default_factory=list)


class FileSecretStore(SecretStore):
    """Sealed secrets in ``path`` (by default ``<data_dir>/secrets.enc``), its lock beside it.

    Args:
        path: the file; its directory is created (0700) if missing. Absent: an empty store.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)
        self._lock = self.path.with_name(f".{self.path.name}.lock")
        self._cache: tuple[tuple[int, int, int], _State] | None = None
        self._mutex = threading.Lock()

    def revision(self) -> int:
        return self._state().revision

    def all(self) -> list[SealedSecret]:
        secrets = self._state().secrets
        return [secrets[k] for k in sorted(secrets)]

    def get(self, org_id: str, name: str) -> SealedSecret | None:
        return self._state().secrets.get((org_id, name))

    def put(self, record: SealedSecret) -> bool:
        with self._locked():
            state = self._copy()
            key = (record.org_id, record.name)
            created = key not in state.secrets
            state.secrets[key] = record
            state.changes.append(SecretChange(record.org_id, record.name, "set", record.updated,
                                              record.updated_by, record.shared, created))  # fmt: skip
            self._write(state)
            return created

    def delete(
        self, org_id: str, name: str, *, at: datetime, author: Author
    ) -> SealedSecret | None:
        with self._locked():
            state = self._copy()
            gone = state.secrets.pop((org_id, name), None)
            if gone is not None:
                state.changes.append(SecretChange(org_id, name, "delete", at, author))
                self._write(state)
            return gone

    def reseal(self, records: Sequence[SealedSecret]) -> int:
        with self._locked():
            state = self._copy()
            done = 0
            for record in records:
                key = (record.org_id, record.name)
                if key in state.secrets:
                    state.secrets[key] = record
                    state.changes.append(SecretChange(record.org_id, record.name, "rekey",
                                                      record.updated, record.updated_by,
                                                      record.shared))  # fmt: skip
                    done += 1
            if done:
                self._write(state)
            return done

    def changes(self) -> list[SecretChange]:
        return list(self._state().changes)

    def close(self) -> None:
        """Nothing to release: no handle stays open between calls."""

    def _copy(self) -> _State:
        state = self._state()
        return _State(state.revision, dict(state.secrets), list(state.changes))

    def _state(self) -> _State:
        """The file's content (cached by its stat; a missing file is an empty store)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return _State()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise PermanentError(
                f"secret store {self.path}: other users may access it (mode {mode:04o}); "
                f"run: chmod 600 {self.path}"
            )
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._mutex:
            if self._cache is None or self._cache[0] != seen:
                try:
                    loaded = orjson.loads(self.path.read_bytes())
                    if loaded.get("format") != _FORMAT:
                        raise ValueError(f"unknown format {loaded.get('format')!r}")
                    secrets = {(r.org_id, r.name): r for r in
                               (sealed_from_json(item) for item in loaded["secrets"])}  # fmt: skip
                    changes = [change_from_json(item) for item in loaded.get("changes", [])]
                    state = _State(int(loaded["revision"]), secrets, changes)
                except (orjson.JSONDecodeError, ValueError, KeyError, TypeError,
                        AttributeError) as exc:  # fmt: skip
                    # the reason only: a decode error never quotes the file
                    raise PermanentError(f"secret store {self.path} is unreadable: "
                                         f"{type(exc).__name__}") from None  # fmt: skip
                self._cache = (seen, state)
            return self._cache[1]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, state: _State) -> None:
        state.revision += 1
        body = orjson.dumps({
            "format": _FORMAT, "revision": state.revision,
            "secrets": [sealed_to_json(state.secrets[k]) for k in sorted(state.secrets)],
            "changes": [change_to_json(c) for c in state.changes],
        })  # fmt: skip
        replace_durably(self.path, body, prefix=".secrets-")
