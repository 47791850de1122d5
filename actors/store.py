"""The event-store actor: the one process that owns the store (chDB locks its directory).

Inserts are group-committed. Every statement costs chDB a fixed ~8-10 ms here (parse, a new
part per table) on top of the per-row work, and a batch touches up to six tables, so the fixed
part alone was ~60 us per event at batches of 1,000. While one insert runs, the blocks of every
other caller (lanes, the ingress, the trigger dispatcher) queue up; the next flush joins them
into one statement per table. Under load that divides the fixed cost by the number of callers;
idle, a single caller is inserted at once, so latency does not grow.

If a joined insert fails, each caller's blocks are inserted on their own, so a bad block fails
only the caller that sent it (that lane retries its batch) and never stalls the others.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from eventray.cluster.wiring import Endpoints, make_event_store
from eventray.config.settings import Settings
from eventray.pipeline.storage.query import EventPage, EventQuery, query_events
from eventray.pipeline.storage.rows import json_each_row

__all__ = ["EventStoreActor"]


@dataclass(slots=True)
class _Pending:
    blocks: dict[str, bytes]
    rows: int
    done: asyncio.Future[int] = field(repr=False)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class EventStoreActor:
    """Inserts batches of rows and answers queries, all on one thread of its own."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self._store = make_event_store(settings, endpoints)
        self._store.ensure_schema()
        # One thread talks to the store; the event loop only queues and joins.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.insert_calls = 0
        self.statements = 0
        self.insert_s = 0.0
        self.select_s = 0.0

    async def insert_rows(self, rows: dict[str, list[dict[str, Any]]]) -> int:
        """Insert each table's rows (encoded here); returns the number of rows."""
        blocks = {table: json_each_row(items) for table, items in rows.items() if items}
        return await self.insert_blocks(blocks, sum(len(items) for items in rows.values()))

    async def insert_blocks(self, blocks: dict[str, bytes], rows: int) -> int:
        """Insert per-table ``JSONEachRow`` blocks encoded by the caller (lanes encode in
        parallel; this single owner of the store only runs the inserts). Returns when the
        rows are stored."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(blocks, rows, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            pending, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._thread, self._insert_joined, pending)
            except Exception:
                for one in pending:  # isolate the caller whose blocks fail
                    try:
                        await loop.run_in_executor(self._thread, self._insert_joined, [one])
                    except Exception as exc:
                        one.done.set_exception(exc)
                    else:
                        one.done.set_result(one.rows)
                continue
            for one in pending:
                one.done.set_result(one.rows)

    def _insert_joined(self, pending: list[_Pending]) -> None:  # the store thread
        started = time.perf_counter()
        joined: dict[str, list[bytes]] = {}
        for one in pending:
            for table, block in one.blocks.items():
                if block:
                    joined.setdefault(table, []).append(block)
        for table, parts in joined.items():
            # Every block ends in a newline (JSONEachRow), so they concatenate as they are.
            self._store.insert_encoded(table, b"".join(parts))
            self.statements += 1
        self.rows_written += sum(one.rows for one in pending)
        self.insert_calls += len(pending)
        self.insert_s += time.perf_counter() - started

    async def select(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._store.select, sql, parameters)
        finally:
            self.select_s += time.perf_counter() - started

    async def query_events(self, query: EventQuery) -> EventPage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, query_events, self._store, query)

    async def stats(self) -> dict[str, float]:
        return {
            "rows_written": self.rows_written,
            "insert_calls": self.insert_calls,
            "statements": self.statements,
            "insert_s": round(self.insert_s, 3),
            "select_s": round(self.select_s, 3),
        }

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._store.close)
