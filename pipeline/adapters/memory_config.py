"""ConfigStore in memory: the twin of the file store and MongoDB, for unit tests of the
management API's services. It runs the same change planning
(:mod:`eventray.pipeline.config_changes`) and the same document checks, so it records the
same history and refuses the same writes; it only forgets everything when dropped."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from eventray.pipeline.clock import SystemClock
from eventray.pipeline.config_changes import plan_delete, plan_put
from eventray.pipeline.loader import checked_documents
from eventray.pipeline.ports import LOCAL_ADMIN, Author, Clock, ConfigStore, EntityChange

__all__ = ["MemoryConfigStore"]

Key = tuple[str, str]


class MemoryConfigStore(ConfigStore):
    """Entities, revisions and history in dictionaries (thread-safe, like the real stores).

    Args:
        clock: when changes are recorded as made.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._documents: dict[Key, dict[str, Any]] = {}  # insertion order = first put
        self._revisions: dict[Key, int] = {}
        self._history: dict[Key, list[EntityChange]] = {}
        self._revision = 0

    def put(
        self,
        documents: Sequence[Mapping[str, Any]],
        *,
        author: Author = LOCAL_ADMIN,
        expected: Mapping[Key, int] | None = None,
        note: str = "",
    ) -> int:
        """Upsert by (kind, id); see :meth:`ConfigStore.put`."""
        checked = [
            ((kind, entity_id), doc) for kind, entity_id, doc in checked_documents(documents)
        ]
        with self._lock:
            if not checked:
                return self._revision
            planned = plan_put(
                self._documents, self._revisions, checked, author=author, at=self._clock.now(),
                store_revision=self._revision + 1, expected=expected, note=note,
            )  # fmt: skip
            for key, doc in checked:
                self._documents[key] = doc
            self._publish(planned.changes)
            self._revision += 1
            return self._revision

    def delete(
        self,
        kind: str,
        entity_id: str,
        *,
        author: Author = LOCAL_ADMIN,
        expected: int | None = None,
        note: str = "",
    ) -> int:
        """Remove one entity; see :meth:`ConfigStore.delete`."""
        with self._lock:
            planned = plan_delete(
                self._documents, self._revisions, (kind, entity_id), author=author,
                at=self._clock.now(), store_revision=self._revision + 1, expected=expected,
                note=note,
            )  # fmt: skip
            if not planned.changes:
                return self._revision
            del self._documents[(kind, entity_id)]
            self._publish(planned.changes)
            self._revision += 1
            return self._revision

    def documents(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._documents.values()))

    def revision(self) -> int:
        return self._revision

    def entity_revisions(self) -> dict[Key, int]:
        with self._lock:
            return {key: self._revisions.get(key, 0) for key in self._documents}

    def snapshot(self) -> tuple[int, list[dict[str, Any]], dict[Key, int]]:
        with self._lock:
            documents = copy.deepcopy(list(self._documents.values()))
            revisions = {key: self._revisions.get(key, 0) for key in self._documents}
            return self._revision, documents, revisions

    def history(self, kind: str, entity_id: str) -> list[EntityChange]:
        with self._lock:
            return list(self._history.get((kind, entity_id), []))

    def close(self) -> None:
        """Nothing to release."""

    def _publish(self, changes: list[EntityChange]) -> None:
        for change in changes:
            key = (change.kind, change.entity_id)
            self._revisions[key] = change.revision
            self._history.setdefault(key, []).append(copy.deepcopy(change))
