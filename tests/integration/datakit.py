"""Stored data behind the management API's read, DLQ and replay routes, for tests, with real
components and no Ray: the sample tenant's simulated traffic (plus readings that fail
validation in both cold rooms, and an uplink no asset binds) appended to partition 0 of the
in-memory stream, processed by the real EventProcessor (QuickJS templates, route groups,
business rules), turned into rows with every log kept and inserted into embedded chDB; the
routes read it through :class:`~eventray.actors.api_reads.DirectStoredData`, and the real
:class:`~eventray.pipeline.replay.ReplayService` redrives and replays over the stream's twin
and the DLQ in chDB (``SqlDeadLetters``).

``apikit.RunningApi(root, routers=data_routers(), state=data.state(api.entities))`` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter

from eventray.actors.api_overview import overview_router
from eventray.actors.api_reads import DirectStoredData, reads_router, reads_state
from eventray.actors.api_replay import replay_router
from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.adapters.memory_archive import MemoryArchive
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.management import EntityService
from eventray.pipeline.processor import EventProcessor, Ingested
from eventray.pipeline.replay import ReplayService
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.storage.dead_letters import SqlDeadLetters
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, TriggerAttempt, as_dicts, batch_rows
from eventray.pipeline.storage.schema import TABLES
from eventray.pipeline.storage.sink import StoreSink
from eventray.testing.simulator import DeviceSimulator

NOW = datetime(2026, 3, 1, 8, 5, tzinfo=UTC)
SUBJECT_PREFIX = "eventray.in"
TRIGGERS = "eventray.triggers"
ROOMS = ("alpha-cold-room-1", "alpha-cold-room-2")
FAILING = {"FRZ-0001": "fail-a", "FRZ-0003": "fail-b"}
"""Devices (room 1's freezer-01, room 2's freezer-03) that also send a reading that fails
validation, with its eventTrackerId."""


def data_routers() -> list[APIRouter]:
    return [reads_router(), overview_router(), replay_router()]


def _catalog(documents: Sequence[Mapping[str, Any]]) -> Catalog:
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", dict(doc), issues) for doc in documents]
    assert not issues, issues
    return build_catalog([("test", e) for e in entities if e is not None])


def _items(catalog: Catalog, events: int) -> list[Ingested]:
    simulator = DeviceSimulator(catalog, bad_ratio=0.0)
    items = []
    for index, uplink in enumerate(simulator.take(events)):
        received = int(simulator.now.timestamp() * 1000)
        items.append(Ingested(f"sim-{index:04d}", uplink.data_source_id, uplink.body, received))
    at = int((NOW - timedelta(minutes=1)).timestamp() * 1000)
    for n, (device, tracker) in enumerate(FAILING.items()):
        body = {"deviceId": device, "ts": "2026-03-01T08:02:00Z", "readings": {"t": 85}}
        items.append(Ingested(tracker, "ds-gateway-http", orjson.dumps(body), at + n))
    items.append(Ingested("unbound", "ds-gateway-http", b'{"deviceId": "NOPE"}', at + 5))
    return items


@dataclass
class StoredData:
    """The data and what serves it (see the module's docstring)."""

    catalog: Catalog
    store: ChdbEventStore
    database: str
    stream: MemoryStream
    truth: dict[str, list[dict[str, Any]]]
    reader: DirectStoredData
    service: ReplayService
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, entities: EntityService) -> dict[str, Any]:
        """What the routers find on ``app.state``."""

        async def lag(partitions: Sequence[int]) -> dict[int, int]:
            return {p: await self.stream.pending(p) for p in partitions}

        # One partition (the stream's 0) holds every organization's events.
        return {**reads_state(self.reader, entities), "replays": self.service,
                "partitions": 1, "lag": lag}  # fmt: skip

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self.store.select(sql, dict(parameters or {}))


@contextlib.contextmanager
def stored_data(
    documents: Sequence[Mapping[str, Any]], chdb_dir: Path, *, events: int = 120
) -> Iterator[StoredData]:
    """The data for ``documents`` (the sample tenant, or more) in a fresh chDB database."""
    catalog = _catalog(documents)
    stream = MemoryStream()
    items = stream.add(0, _items(catalog, events))  # stamped with their stream sequences
    processor = EventProcessor(
        catalog,
        TemplateExecutor(ScriptCache()),
        RuleEngine(catalog.rule_set(), MemoryStateStore(), clock=ManualClock(NOW)),
    )
    batch = processor.process(items)
    retention = RetentionPolicy(defaults=dict.fromkeys(TABLES, 3650))  # the data is dated
    context = RowContext.from_catalog(catalog, retention, log_detail="all")
    attempts = []  # a failed delivery then a delivered one, for an evaluation in each room
    for room in ROOMS:
        first = next(e for e in batch.rules.evaluations if e.org_id == room)
        for attempt, ok in ((1, False), (2, True)):
            attempts.append(TriggerAttempt(
                first.event_tracker_id, first.org_id, first.business_rule_id, "notify",
                "slack-ops", attempt, ok, 10 * attempt, NOW + timedelta(seconds=attempt),
                '{"text": "hot"}', "ok" if ok else "", "" if ok else "HTTP 503",
            ))  # fmt: skip
    rows = batch_rows(batch, context, now=NOW, ingested=items, triggers=attempts)
    database = f"api_{uuid.uuid4().hex[:8]}"
    store = ChdbEventStore(path=chdb_dir, database=database)
    try:
        store.ensure_schema()
        for _ in range(2):  # a redelivery: FINAL reads each record once
            for table, found in rows.items():
                if found:
                    store.insert(table, found)
        reader = DirectStoredData(store, database=database)
        lock = reader._lock  # one chDB session: one statement at a time

        def locked_select(sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
            with lock:
                return store.select(sql, dict(parameters))

        async def select(sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
            return await asyncio.to_thread(locked_select, sql, parameters)

        def locked_insert(table: str, found: Sequence[Sequence[Any]]) -> None:
            with lock:
                store.insert(table, found)

        class LockedStore:  # what StoreSink needs of a store
            insert = staticmethod(locked_insert)

        service = ReplayService(
            catalog=lambda: catalog,
            archive=MemoryArchive(stream, trigger_subject=TRIGGERS),
            store=SqlDeadLetters(
                select=select,
                sink=StoreSink(LockedStore()),  # type: ignore[arg-type]
                retention=retention,
                database=database,
            ),
            partitions=1,
            subject_prefix=SUBJECT_PREFIX,
            trigger_subject=TRIGGERS,
            now_ms=lambda: int((NOW + timedelta(hours=1)).timestamp() * 1000),
        )
        yield StoredData(catalog, store, database, stream, as_dicts(rows), reader, service, lock)
    finally:
        store.close()
