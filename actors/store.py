"""The event-store actor: the one process that owns the store (chDB locks its directory)."""

from __future__ import annotations

import time
from typing import Any

import ray

from cluster.wiring import Endpoints, make_event_store
from config.settings import Settings
from pipeline.storage.query import EventPage, EventQuery, query_events

__all__ = ["EventStoreActor"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class EventStoreActor:
    """Inserts batches of rows and answers queries. Single-threaded by design."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self._store = make_event_store(settings, endpoints)
        self._store.ensure_schema()
        self.rows_written = 0
        self.insert_calls = 0
        self.insert_s = 0.0
        self.select_s = 0.0

    def insert_rows(self, rows: dict[str, list[dict[str, Any]]]) -> int:
        """Insert each table's rows in one round trip; returns the number of rows."""
        started = time.perf_counter()
        count = 0
        for table, items in rows.items():
            if items:
                self._store.insert(table, items)
                count += len(items)
        self.rows_written += count
        self.insert_calls += 1
        self.insert_s += time.perf_counter() - started
        return count

    def insert_blocks(self, blocks: dict[str, bytes], rows: int) -> int:
        """Insert per-table ``JSONEachRow`` blocks encoded by the caller (lanes encode in
        parallel; this single owner of the store only runs the inserts)."""
        started = time.perf_counter()
        for table, block in blocks.items():
            if block:
                self._store.insert_encoded(table, block)
        self.rows_written += rows
        self.insert_calls += 1
        self.insert_s += time.perf_counter() - started
        return rows

    def select(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            return self._store.select(sql, parameters)
        finally:
            self.select_s += time.perf_counter() - started

    def query_events(self, query: EventQuery) -> EventPage:
        return query_events(self._store, query)

    def stats(self) -> dict[str, float]:
        return {
            "rows_written": self.rows_written,
            "insert_calls": self.insert_calls,
            "insert_s": round(self.insert_s, 3),
            "select_s": round(self.select_s, 3),
        }

    def close(self) -> None:
        self._store.close()
