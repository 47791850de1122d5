"""In-memory StateStore: the twin of the Redis adapter, for tests and test mode."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from eventray.pipeline.ports import StateSnapshot, StateStore

__all__ = ["MemoryStateStore"]


class MemoryStateStore(StateStore):
    """Keeps state in a dict; commits are atomic under a lock, with the same sequence fence."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = dict(initial or {})
        self._fences: dict[str, int] = {}
        self._lock = threading.Lock()

    def load(self, keys: Sequence[str], *, partition: str) -> StateSnapshot:
        with self._lock:
            values = {k: copy.deepcopy(self._values[k]) for k in keys if k in self._values}
            return StateSnapshot(values=values, applied_seq=self._fences.get(partition, 0))

    def commit(self, writes: Mapping[str, Any], *, partition: str, seq: int) -> bool:
        with self._lock:
            if seq and seq <= self._fences.get(partition, 0):
                return False
            self._values.update(writes)
            if seq:
                self._fences[partition] = seq
            return True

    def dump(self) -> dict[str, Any]:
        """A copy of everything stored (for tests and test-mode sandboxes)."""
        with self._lock:
            return copy.deepcopy(self._values)
