"""The event-store actor: the one process that owns the store (chDB locks its directory).

Inserts are group-committed. Every statement costs the store a fixed few milliseconds here
(parsing, a new part per table, merging it later) on top of the per-row work, and a batch
touches up to six tables. While one insert runs, the rows of every other caller (lanes, the
ingress, the trigger dispatcher) queue up; the next flush joins them into one statement per
table. Under load that divides the fixed cost by the number of callers; idle, a single caller
is inserted at once, so latency does not grow. Under load (the previous flush ended moments
ago) the flusher also lingers a few milliseconds for company before it starts: each statement
it saves is worth milliseconds of the store's CPU.

If a joined insert fails, each caller's rows are inserted on their own, so bad rows fail only
the caller that sent them (that lane narrows its batch down) and never stall the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from eventray.config.settings import Settings
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ports import Adapters, RowSink
from eventray.pipeline.storage.query import EventPage, EventQuery, query_events

__all__ = ["EventStoreActor", "StoreClient", "StoreUnavailable"]

Rows = Mapping[str, Sequence[Sequence[Any]]]


@dataclass(slots=True)
class _Pending:
    rows: Rows
    done: asyncio.Future[int] = field(repr=False)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.rows.values())


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class EventStoreActor:
    """Inserts batches of rows and answers queries, all on one thread of its own."""

    def __init__(
        self,
        settings: Settings,
        adapters: Adapters,
        *,
        linger_s: float = 0.01,
        busy_within_s: float = 0.05,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.linger_s = linger_s
        self.busy_within_s = busy_within_s
        self._last_flush = 0.0
        self._store = adapters.event_store()
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

    async def insert(self, rows: Rows) -> int:
        """Insert row tuples per table (DDL column order); returns the number of rows once
        they are stored."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(rows, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if time.monotonic() - self._last_flush < self.busy_within_s:
                await asyncio.sleep(self.linger_s)  # busy: let other callers join this flush
            pending, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._thread, self._insert_joined, pending)
            except Exception:
                for one in pending:  # isolate the caller whose rows fail
                    try:
                        await loop.run_in_executor(self._thread, self._insert_joined, [one])
                    except Exception as exc:
                        one.done.set_exception(exc)
                    else:
                        one.done.set_result(one.count)
                continue
            for one in pending:
                one.done.set_result(one.count)

    def _insert_joined(self, pending: list[_Pending]) -> None:  # the store thread
        started = time.perf_counter()
        for table, items in _joined(pending).items():
            self._store.insert(table, items)
            self.statements += 1
        self.rows_written += sum(one.count for one in pending)
        self.insert_calls += len(pending)
        self.insert_s += time.perf_counter() - started
        self._last_flush = time.monotonic()

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
            "statements": getattr(self._store, "statements", self.statements),
            "flushes": getattr(self._store, "flushes", 0),
            "insert_s": round(self.insert_s, 3),
            "select_s": round(self.select_s, 3),
        }

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._store.close)


class StoreClient(RowSink):
    """The store actor as a :class:`RowSink`, found by name (a restarted caller finds it
    again; an actor handle passed to a constructor would make Ray keep the constructor's
    arguments in the object store, where a restart can lose them).

    Writes from one process are group-committed too: while one call is on its way, the rows
    of the process's other partitions queue and go in the next call together, so the store
    sees fewer, bigger blocks. If a joined call fails, each caller's rows are sent on their
    own, so one partition's bad rows never fail another partition's batch.

    Args:
        name: the store actor's name in the Ray namespace.
    """

    def __init__(self, name: str = "store") -> None:
        self.name = name
        self._handle: Any = None
        self._queue: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = ray.get_actor(self.name)
        return self._handle

    async def write(self, rows: Rows) -> None:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(rows, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        await done

    async def _send(self) -> None:
        while self._queue:
            pending, self._queue = self._queue, []
            try:
                await self._call(_joined(pending))
            except Exception as exc:
                if len(pending) == 1:
                    pending[0].done.set_exception(exc)
                    continue
                for one in pending:  # isolate the caller whose rows fail
                    try:
                        await self._call(one.rows)
                    except Exception as alone:
                        one.done.set_exception(alone)
                    else:
                        one.done.set_result(one.count)
                continue
            for one in pending:
                one.done.set_result(one.count)

    async def _call(self, rows: Rows) -> None:
        self.calls += 1
        try:
            handle = self.handle
        except ValueError as exc:  # get_actor: no such actor (yet)
            raise StoreUnavailable(f"no store actor {self.name!r}: {exc}") from exc
        try:
            await handle.insert.remote(rows)
        except (RayActorError, ActorUnavailableError, GetTimeoutError) as exc:
            self._handle = None  # look it up again: it may have been restarted
            raise StoreUnavailable(f"the store actor {self.name!r} is unavailable: {exc}") from exc


def _joined(pending: list[_Pending]) -> dict[str, list[Sequence[Any]]]:
    joined: dict[str, list[Sequence[Any]]] = {}
    for one in pending:
        for table, items in one.rows.items():
            if items:
                joined.setdefault(table, []).extend(items)
    return joined


class StoreUnavailable(RetryableError):
    """The store actor is restarting or not there yet."""
