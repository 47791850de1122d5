"""ConfigStore on local disk: the embedded default, for machines without MongoDB.

Why it is shaped this way:

- **One file holds every document and the revision.** A single ``os.replace`` publishes both,
  so a reader never pairs the documents of one revision with the number of another, and a put
  of many documents lands whole or not at all. Config is small (kilobytes to a few megabytes),
  so rewriting the file per change costs little next to that guarantee.
- **Writers serialise on ``fcntl.flock``.** Every change is read-modify-write of the whole
  file; without the lock two processes (a CLI and the composition root, say) would each drop
  the other's update. Readers take no lock: the rename is atomic, so they see the old file or
  the new one, whole.
- **Documents keep the position of their first put.** Organizations without a pinned ``code``
  get their pathKey from their position among siblings, so a store that reordered documents
  (by key, say) would renumber organizations whose stored rows keep the old pathKey.
- **Durable before it returns.** The store is the source of truth, so the new file and its
  directory entry are fsynced before a revision is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.loader import checked_documents
from eventray.pipeline.ports import ConfigStore

__all__ = ["FileConfigStore"]

_FORMAT: Final = 1
_DATA_FILE: Final = "entities.json"
_LOCK_FILE: Final = ".lock"


@dataclass(slots=True)
class _State:
    revision: int = 0
    documents: list[dict[str, Any]] = field(default_factory=list)


def _checked(
    documents: Sequence[Mapping[str, Any]],
) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """Each document with its (kind, id), as a JSON copy; refuses the batch on any problem."""
    return [((kind, entity_id), copy) for kind, entity_id, copy in checked_documents(documents)]


class FileConfigStore(ConfigStore):
    """Entities in ``root/entities.json``, with the revision beside them.

    Several instances, in one process or many, may share ``root``: every change happens under
    an exclusive ``flock`` on ``root/.lock`` and every read sees the latest published file.

    Args:
        root: the directory (created if missing) that holds the data file and the lock file.
    """

    def __init__(self, *, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._data = self.root / _DATA_FILE
        self._lock = self.root / _LOCK_FILE

    def put(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Upsert ``documents`` by (kind, id) in one atomic change; returns the new revision.

        A replaced document keeps its position; new ones are appended in the given order. An
        empty batch changes nothing and returns the current revision.

        Raises:
            ConfigError: a document lacks a string ``kind`` or ``id``, or holds a value JSON
                cannot carry; nothing was stored.
        """
        checked = _checked(documents)
        if not checked:
            return self.revision()
        with self._locked():
            state = self._read()
            position = {_key(doc): index for index, doc in enumerate(state.documents)}
            for key, doc in checked:
                if key in position:
                    state.documents[position[key]] = doc
                else:
                    position[key] = len(state.documents)
                    state.documents.append(doc)
            state.revision += 1
            self._write(state)
            return state.revision

    def delete(self, kind: str, entity_id: str) -> int:
        """Remove one entity; returns the new revision, unchanged if there was no such entity."""
        with self._locked():
            state = self._read()
            kept = [doc for doc in state.documents if _key(doc) != (kind, entity_id)]
            if len(kept) == len(state.documents):
                return state.revision
            state.documents = kept
            state.revision += 1
            self._write(state)
            return state.revision

    def documents(self) -> list[dict[str, Any]]:
        """Every stored document, in the order of first put (fresh copies)."""
        return self._read().documents

    def revision(self) -> int:
        """The number of changes ever made under this root (0 for a new store)."""
        return self._read().revision

    def close(self) -> None:
        """Nothing to release: no handle stays open between calls."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh descriptor per change: flock belongs to the open file description, so this
        # also serialises threads of one process, and a forked child never inherits a held lock.
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> _State:
        try:
            raw = self._data.read_bytes()
        except FileNotFoundError:
            return _State()
        try:
            loaded = orjson.loads(raw)
            if loaded.get("format") != _FORMAT:
                raise ValueError(f"unknown format {loaded.get('format')!r}, expected {_FORMAT}")
            return _State(int(loaded["revision"]), list(loaded["documents"]))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PermanentError(f"config store file {self._data} is unreadable: {exc}") from exc

    def _write(self, state: _State) -> None:
        body = orjson.dumps(
            {"format": _FORMAT, "revision": state.revision, "documents": state.documents}
        )
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash
        finally:
            os.close(directory)


def _key(doc: Mapping[str, Any]) -> tuple[str, str]:
    return str(doc.get("kind")), str(doc.get("id"))
