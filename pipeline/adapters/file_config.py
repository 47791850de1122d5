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
- **History in an append-only log beside it, published by the data file.** Each change of an
  entity is one JSON line of ``history.jsonl``; the data file records how many bytes of the
  log belong to its state (``historyBytes``) and each entity's revision. A writer appends and
  fsyncs its lines *before* it publishes the data file, and first cuts the log back to the
  published length, so lines a crashed writer left behind are never read and never kept: the
  data file and the log change together or not at all, without a second lock or a
  transaction. Rewriting the whole data file per change is fine for entities; the history
  grows without bound, which is why it is not in that file. Readers index the log by entity
  once and then read only what was appended since.
- **Cheap revision checks.** Each change replaces the data file (a new inode), so its
  ``stat`` tells whether the revision changed: :meth:`revision` parses the file only when it
  did (the management API asks on every request).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from eventray.pipeline.adapters.durable_file import replace_durably
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.config_changes import (
    change_from_json,
    change_to_json,
    plan_delete,
    plan_put,
)
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.loader import checked_documents
from eventray.pipeline.ports import LOCAL_ADMIN, Author, Clock, ConfigStore, EntityChange

__all__ = ["FileConfigStore"]

_FORMAT: Final = 1
_DATA_FILE: Final = "entities.json"
_LOCK_FILE: Final = ".lock"
_HISTORY_FILE: Final = "history.jsonl"
_HEAD: Final = re.compile(rb'^\{"format":1,"revision":(\d+),')
_HISTORY_HEAD: Final = re.compile(rb'^\{"format":1,"revision":\d+,"historyBytes":(\d+),')


@dataclass(slots=True)
class _State:
    revision: int = 0
    documents: list[dict[str, Any]] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)  # "kind/id" -> entity revision
    history_bytes: int = 0


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
        clock: when changes are recorded as made.
    """

    def __init__(self, *, root: Path, clock: Clock | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._data = self.root / _DATA_FILE
        self._lock = self.root / _LOCK_FILE
        self._log = self.root / _HISTORY_FILE
        self._clock = clock or SystemClock()
        self._seen: tuple[int, int, int] | None = None  # the data file's stat at _seen_revision
        self._seen_revision = 0
        self._index: dict[tuple[str, str], list[tuple[int, int]]] = {}  # (offset, length)
        self._indexed = 0  # bytes of the log indexed so far
        self._index_lock = threading.Lock()  # the management API reads from many threads

    def put(
        self,
        documents: Sequence[Mapping[str, Any]],
        *,
        author: Author = LOCAL_ADMIN,
        expected: Mapping[tuple[str, str], int] | None = None,
        note: str = "",
    ) -> int:
        """Upsert ``documents`` by (kind, id) in one atomic change; returns the new revision.

        A replaced document keeps its position; new ones are appended in the given order. An
        empty batch changes nothing and returns the current revision.

        Raises:
            ConfigError: a document lacks a string ``kind`` or ``id``, or holds a value JSON
                cannot carry; nothing was stored.
            RevisionConflictError: ``expected`` does not hold; nothing was stored.
        """
        checked = _checked(documents)
        if not checked:
            return self.revision()
        with self._locked():
            state = self._read()
            position = {_key(doc): index for index, doc in enumerate(state.documents)}
            current = {_key(doc): doc for doc in state.documents}
            planned = plan_put(
                current, _revisions(state), checked, author=author, at=self._clock.now(),
                store_revision=state.revision + 1, expected=expected, note=note,
            )  # fmt: skip
            for key, doc in checked:
                if key in position:
                    state.documents[position[key]] = doc
                else:
                    position[key] = len(state.documents)
                    state.documents.append(doc)
            state.revision += 1
            self._record(state, planned.changes)
            self._write(state)
            return state.revision

    def delete(
        self,
        kind: str,
        entity_id: str,
        *,
        author: Author = LOCAL_ADMIN,
        expected: int | None = None,
        note: str = "",
    ) -> int:
        """Remove one entity; returns the new revision, unchanged if there was no such entity.

        Raises:
            RevisionConflictError: ``expected`` does not hold; nothing was removed.
        """
        with self._locked():
            state = self._read()
            current = {_key(doc): doc for doc in state.documents}
            planned = plan_delete(
                current, _revisions(state), (kind, entity_id), author=author,
                at=self._clock.now(), store_revision=state.revision + 1, expected=expected,
                note=note,
            )  # fmt: skip
            if not planned.changes:
                return state.revision
            state.documents = [doc for doc in state.documents if _key(doc) != (kind, entity_id)]
            state.revision += 1
            self._record(state, planned.changes)
            self._write(state)
            return state.revision

    def documents(self) -> list[dict[str, Any]]:
        """Every stored document, in the order of first put (fresh copies)."""
        return self._read().documents

    def revision(self) -> int:
        """The number of changes ever made under this root (0 for a new store); parses the
        data file only when it was replaced since the last look."""
        try:
            info = self._data.stat()
        except FileNotFoundError:
            return 0
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        if seen != self._seen:
            # The file starts {"format":1,"revision":N,... (written so): read only that much.
            head = None
            with contextlib.suppress(OSError), self._data.open("rb") as handle:
                head = _HEAD.match(handle.read(64))
            revision = int(head.group(1)) if head else self._read().revision
            self._seen, self._seen_revision = seen, revision
        return self._seen_revision

    def entity_revisions(self) -> dict[tuple[str, str], int]:
        """Each stored entity's revision (0 for one stored before revisions were kept)."""
        state = self._read()
        revisions = _revisions(state)
        return {key: revisions.get(key, 0) for key in map(_key, state.documents)}

    def snapshot(self) -> tuple[int, list[dict[str, Any]], dict[tuple[str, str], int]]:
        """One parse of the data file: its revision, documents and entity revisions."""
        state = self._read()
        revisions = _revisions(state)
        keys = [_key(doc) for doc in state.documents]
        return state.revision, state.documents, {key: revisions.get(key, 0) for key in keys}

    def history(self, kind: str, entity_id: str) -> list[EntityChange]:
        """The recorded changes of one entity, oldest first, from the published part of the
        log (see the module's docstring)."""
        published = self._published_history()
        with self._index_lock:
            return self._history(kind, entity_id, published)

    def _published_history(self) -> int:
        """How many bytes of the log the data file publishes, from the file's first bytes
        (written first for this), else from the whole file."""
        head = None
        with contextlib.suppress(OSError), self._data.open("rb") as handle:
            head = _HISTORY_HEAD.match(handle.read(96))
        return int(head.group(1)) if head else self._read().history_bytes

    def _history(self, kind: str, entity_id: str, published: int) -> list[EntityChange]:
        if published < self._indexed:  # a new store under this root: index again
            self._index, self._indexed = {}, 0
        out: list[EntityChange] = []
        with contextlib.suppress(FileNotFoundError), self._log.open("rb") as log:
            if published > self._indexed:
                log.seek(self._indexed)
                offset = self._indexed
                for line in log.read(published - self._indexed).splitlines(keepends=True):
                    record = orjson.loads(line)
                    where = (str(record["kind"]), str(record["id"]))
                    self._index.setdefault(where, []).append((offset, len(line)))
                    offset += len(line)
                self._indexed = published
            for offset, length in self._index.get((kind, entity_id), []):
                log.seek(offset)
                out.append(change_from_json(orjson.loads(log.read(length))))
        return out

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
            return _State(
                int(loaded["revision"]),
                list(loaded["documents"]),
                {str(k): int(v) for k, v in (loaded.get("revisions") or {}).items()},
                int(loaded.get("historyBytes", 0)),
            )
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PermanentError(f"config store file {self._data} is unreadable: {exc}") from exc

    def _write(self, state: _State) -> None:
        body = orjson.dumps(
            {
                "format": _FORMAT,
                "revision": state.revision,
                "historyBytes": state.history_bytes,  # before the documents: read from the head
                "documents": state.documents,
                "revisions": state.revisions,
            }
        )
        replace_durably(self._data, body, prefix=".tmp-")

    def _record(self, state: _State, changes: list[EntityChange]) -> None:
        """Append ``changes`` to the log, durably, after cutting it back to what ``state``
        published (a crashed writer's lines go); ``state`` then publishes them."""
        for change in changes:
            state.revisions[f"{change.kind}/{change.entity_id}"] = change.revision
        if not changes:  # only cut a crashed writer's lines, if any
            with contextlib.suppress(FileNotFoundError):
                if self._log.stat().st_size > state.history_bytes:
                    os.truncate(self._log, state.history_bytes)
            return
        fd = os.open(self._log, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, state.history_bytes)
            os.lseek(fd, state.history_bytes, os.SEEK_SET)
            body = b"".join(orjson.dumps(change_to_json(c)) + b"\n" for c in changes)
            view = memoryview(body)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        state.history_bytes += len(body)


def _revisions(state: _State) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for key, revision in state.revisions.items():
        kind, _, entity_id = key.partition("/")
        out[(kind, entity_id)] = revision
    return out


def _key(doc: Mapping[str, Any]) -> tuple[str, str]:
    return str(doc.get("kind")), str(doc.get("id"))
