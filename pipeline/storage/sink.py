"""Row sinks: where a batch's rows go, in this process.

:class:`StoreSink` writes to an :class:`EventStore` it holds (the single-process baseline, the
store actor itself); :class:`MemoryRowSink` keeps the rows (tests, ``eventray demo --local``).
The lane actor's sink is the store actor's client (``eventray.actors.store``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eventray.pipeline.ports import EventStore, RowSink
from eventray.pipeline.rules.stage import RunSync, inline
from eventray.pipeline.storage.schema import TABLES

__all__ = ["MemoryRowSink", "StoreSink"]


class StoreSink(RowSink):
    """Writes each table's rows to ``store`` with one insert per table.

    Args:
        store: the event store.
        run_sync: where the blocking inserts run.
    """

    def __init__(self, store: EventStore, *, run_sync: RunSync = inline) -> None:
        self.store = store
        self._run = run_sync

    async def write(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        await self._run(self._write, rows)

    def _write(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        for table, items in rows.items():
            if items:
                self.store.insert(table, items)


class MemoryRowSink(RowSink):
    """Keeps every row written, per table (the twin of the store)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
        self.writes = 0

    async def write(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        for table, items in rows.items():
            if table not in self.rows:
                raise ValueError(f"unknown table {table!r}")
            self.rows[table].extend(tuple(row) for row in items)
        self.writes += 1
