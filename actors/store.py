"""The event-store actor: the one process that owns the store (chDB locks its directory).

It hosts a :class:`~eventray.pipeline.storage.write_behind.WriteBehind` in front of the store:
a caller's rows (already encoded by the caller, in its own process) are appended to a log and
the caller is answered; the flusher inserts what gathered every ``store.flush_interval_s``, one
statement per table. Queries flush first, on the store's own thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from eventray.actors.host import log_as_actor
from eventray.config.settings import Settings
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ports import Adapters, RowSink
from eventray.pipeline.storage.activity import Activity, ActivityQuery, query_activity
from eventray.pipeline.storage.logs import LogPage, LogQuery, query_logs
from eventray.pipeline.storage.query import EventPage, EventQuery, query_events
from eventray.pipeline.storage.scope import Scope
from eventray.pipeline.storage.story import EventStory, event_story
from eventray.pipeline.storage.write_behind import WriteBehind, encode_rows

__all__ = ["EventStoreActor", "StoreClient", "StoreUnavailable"]

Rows = Mapping[str, Sequence[Sequence[Any]]]
_SWITCH_INTERVAL_S = 0.0005


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class EventStoreActor:
    """Accepts encoded batches of rows and answers queries."""

    def __init__(self, settings: Settings, adapters: Adapters) -> None:
        from concurrent.futures import ThreadPoolExecutor

        log_as_actor(settings, "store")

        # The flusher thread converts and inserts for tens of milliseconds at a time; with
        # Python's default 5 ms switch interval every hand-over of the GIL to the event loop
        # (which answers the lanes) waits that long, several times per call. Measured at
        # 4,000 events/s on 2 lanes: p99 ingress-to-stored 140-345 ms with 5 ms, 105-173 ms
        # with 0.5 ms, for the same CPU.
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        store = adapters.event_store()
        store.ensure_schema()
        s = settings.store
        self._store = store
        self._database = s.database
        self._log = WriteBehind(
            store,
            settings.data_dir / "store-log" / s.database,
            flush_interval_s=s.flush_interval_s,
            flush_rows=s.flush_rows,
            fsync=s.fsync,
        )
        self.recovered = self._log.recover()  # what a crashed predecessor accepted
        self._log.start()
        # Reads run on a thread of their own (they flush first, then query).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.rows_written = 0
        self.insert_calls = 0
        self.select_s = 0.0

    async def insert(self, record: bytes, rows: int) -> int:
        """Accept one batch's rows (``encode_rows`` bytes holding ``rows`` rows); returns
        once they are in the log."""
        self._log.append(record, rows)
        self.rows_written += rows
        self.insert_calls += 1
        return rows

    def _read(self, fn: Any, *args: Any) -> Any:  # the store thread
        self._log.flush()
        return fn(*args)

    async def select(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._thread, self._read, self._store.select, sql, parameters
            )
        finally:
            self.select_s += time.perf_counter() - started

    async def query_events(self, query: EventQuery) -> EventPage:
        loop = asyncio.get_running_loop()
        page: EventPage = await loop.run_in_executor(
            self._thread, self._read, partial(query_events, database=self._database), self._store,
            query,
        )  # fmt: skip
        return page

    async def query_logs(self, query: LogQuery) -> LogPage:
        """One page of a log table or the DLQ (a query from
        :func:`~eventray.pipeline.storage.reading.plan_log_query`)."""
        loop = asyncio.get_running_loop()
        page: LogPage = await loop.run_in_executor(
            self._thread, self._read, partial(query_logs, database=self._database), self._store,
            query,
        )  # fmt: skip
        return page

    async def activity(self, query: ActivityQuery) -> Activity:
        """Per-minute counts for the Overview (:mod:`eventray.pipeline.storage.activity`)."""
        loop = asyncio.get_running_loop()
        counted: Activity = await loop.run_in_executor(
            self._thread, self._read, partial(query_activity, database=self._database),
            self._store, query,
        )  # fmt: skip
        return counted

    async def event_story(self, scope: Scope, event_tracker_id: str) -> EventStory | None:
        """Everything stored about one event that ``scope`` may read (None: nothing)."""
        loop = asyncio.get_running_loop()
        story: EventStory | None = await loop.run_in_executor(
            self._thread, self._read, partial(event_story, database=self._database), self._store,
            scope, event_tracker_id,
        )  # fmt: skip
        return story

    async def stats(self) -> dict[str, float]:
        log = self._log
        return {
            "rows_written": self.rows_written,
            "insert_calls": self.insert_calls,
            "statements": log.statements,
            "flushes": log.flushes,
            "recovered": self.recovered,
            "kept_in_dlq": log.rows_kept_in_dlq,
            "last_error": log.last_error,  # type: ignore[dict-item]
            "select_s": round(self.select_s, 3),
        }

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._log.close)
        await loop.run_in_executor(self._thread, self._store.close)


@dataclass(slots=True)
class _Pending:
    rows: Rows
    done: asyncio.Future[int] = field(repr=False)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.rows.values())


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
        record = encode_rows(rows)  # here, in the caller's process: the store only appends
        count = sum(len(items) for items in rows.values())
        try:
            handle = self.handle
        except ValueError as exc:  # get_actor: no such actor (yet)
            raise StoreUnavailable(f"no store actor {self.name!r}: {exc}") from exc
        try:
            await handle.insert.remote(record, count)
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
