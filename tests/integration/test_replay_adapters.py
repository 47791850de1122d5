"""The replay ports' adapters against real servers, and their in-memory twins held to the same
contract: the JetStream archive (a real nats-server) beside ``MemoryArchive``, the SQL dead
letters (chDB) beside ``MemoryDeadLetters``.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.adapters.memory_archive import MemoryArchive, MemoryDeadLetters
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.adapters.nats_archive import JetStreamArchive
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.ports import EventSource, OutboxMessage, RowSink
from eventray.pipeline.replay import (
    DeadLetterQuery,
    DeadLetterStore,
    EventArchive,
    RedriveRecord,
)
from eventray.pipeline.storage.dead_letters import SqlDeadLetters
from eventray.pipeline.storage.sink import MemoryRowSink, StoreSink

pytestmark = pytest.mark.services

# Rows are a day old: older ones would be past their retention, which the store's TTL
# deletes on its own time.
T0 = (int(time.time()) // 3600 - 24) * 3_600_000


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEventStore]:
    # chDB opens one directory per process: the one test that uses it has it to itself.
    with ChdbEventStore(path=tmp_path_factory.mktemp("chdb") / "db", database="dead") as store:
        store.ensure_schema()
        yield store


# ---------------------------------------------------------------- the archive


@dataclass
class ArchiveRig:
    archive: EventArchive
    source: Callable[[int], Awaitable[EventSource]]
    prefix: str
    triggers: str
    close: Callable[[], Awaitable[None]]


async def jetstream_rig(nats: RunningNats) -> ArchiveRig:
    name = f"R{uuid.uuid4().hex[:8]}"
    bus = JetStreamBus(url=nats.url, stream=name, subject_prefix=f"r.{name.lower()}")
    await bus.connect()
    triggers = f"{bus.subject_prefix}-triggers"
    await bus.ensure_stream(storage="memory", extra_subjects=(triggers,))
    return ArchiveRig(JetStreamArchive(bus), bus.source, bus.subject_prefix, triggers, bus.close)


async def memory_rig() -> ArchiveRig:
    stream = MemoryStream()

    async def close() -> None:
        return None

    archive = MemoryArchive(stream, trigger_subject="r.mem-triggers")
    return ArchiveRig(archive, stream.source, "r.mem", "r.mem-triggers", close)


@pytest.fixture(params=["jetstream", "memory"])
def archive_rig(
    request: pytest.FixtureRequest, nats: RunningNats
) -> Callable[[], Awaitable[ArchiveRig]]:
    if request.param == "jetstream":
        return lambda: jetstream_rig(nats)
    return memory_rig


def test_the_archive_appends_reads_ranges_gets_and_reports_progress(
    archive_rig: Callable[[], Awaitable[ArchiveRig]],
) -> None:
    async def scenario() -> None:
        rig = await archive_rig()
        p0, p1 = f"{rig.prefix}.p0", f"{rig.prefix}.p1"
        archive = rig.archive
        assert (await archive.bounds(p0)).last_seq == 0
        headers = {"Eventray-Data-Source": "ds", "Eventray-Received-Ms": str(T0)}
        answers = await archive.append(
            [OutboxMessage(p0, f"b{n}".encode(), f"m{n}", headers) for n in range(1, 6)]
            + [OutboxMessage(p1, b"other", "o1", headers)]
        )
        assert [a.error for a in answers] == [""] * 6
        assert not any(a.duplicate for a in answers)
        seq = {f"m{n}": answers[n - 1].seq for n in range(1, 6)}
        assert list(seq.values()) == sorted(seq.values())
        (again,) = await archive.append([OutboxMessage(p0, b"b3", "m3", headers)])
        assert (again.seq, again.duplicate, again.error) == (seq["m3"], True, "")

        bounds = await archive.bounds(p0)
        assert (bounds.first_seq, bounds.last_seq, bounds.dropped) == (seq["m1"], seq["m5"], False)

        async def bodies(**kwargs: Any) -> list[bytes]:
            out: list[bytes] = []
            async for chunk in archive.read(p0, batch=2, **kwargs):
                assert 1 <= len(chunk) <= 2
                out.extend(m.body for m in chunk)
            return out

        everything = [f"b{n}".encode() for n in range(1, 6)]
        assert await bodies(end_seq=bounds.last_seq + 1) == everything
        assert await bodies(start_seq=seq["m2"], end_seq=seq["m5"]) == [b"b2", b"b3", b"b4"]
        assert await bodies(start_ms=0, end_seq=bounds.last_seq + 1) == everything
        assert await bodies(start_ms=T0 * 2, end_seq=bounds.last_seq + 1) == []

        found = await archive.get(p0, seq["m3"])
        assert found is not None
        assert (found.seq, found.body, found.subject) == (seq["m3"], b"b3", p0)
        assert found.headers["Nats-Msg-Id"] == "m3"
        assert found.headers["Eventray-Data-Source"] == "ds"
        assert await archive.get(p0, 10_000) is None

        assert await archive.acknowledged(0) == 0
        source = await rig.source(0)
        items = await source.fetch(4, timeout_s=2, linger_s=0.05)
        assert [i.event_tracker_id for i in items] == ["m1", "m2", "m3", "m4"]
        await source.ack_through(items[-1])
        deadline = asyncio.get_running_loop().time() + 5
        while await archive.acknowledged(0) != seq["m4"]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await source.close()

        (queued,) = await archive.append([OutboxMessage(rig.triggers, b"{}", "t1")])
        assert queued.seq > 0 and not queued.error
        await rig.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- the dead letters


@dataclass
class StoreRig:
    store: DeadLetterStore
    sink: RowSink


@pytest.fixture(params=["chdb", "memory"])
def dead_letters(request: pytest.FixtureRequest, chdb: ChdbEventStore) -> StoreRig:
    if request.param == "memory":
        sink = MemoryRowSink()
        return StoreRig(MemoryDeadLetters(sink), sink)

    async def select(sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return chdb.select(sql, params)

    sink = StoreSink(chdb)
    return StoreRig(SqlDeadLetters(select=select, sink=sink, database="dead"), sink)


def dlq(tracker: str, org: str, path: str, stage: str, seq: int, *, at: int = 0,
        deliveries: int = 1, body: str = '{"n":1}', encoding: str = "text",
        asset: str = "dev") -> tuple[Any, ...]:  # fmt: skip
    return (T0 + at, org, path, tracker, 90, asset, "ds", stage, f"{stage} failed", 0, body,
            encoding, deliveries, seq)  # fmt: skip


def raw(tracker: str, org: str, path: str, stage: str, *, at: int = 0) -> tuple[Any, ...]:
    return (T0 + at, org, path, tracker, 30, "", "ds", stage, "no asset", '{"n":2}', "text")


def record(tracker: str, org: str, path: str, stage: str, seq: int, source: str = "dlq") -> Any:
    return RedriveRecord(source, tracker, org, path, stage, seq, T0, "failed", "rd-1", "ops",  # type: ignore[arg-type]
                         f"redrive:{tracker}", 0, 900 + seq, T0 + 3_600_000)  # fmt: skip


def test_dead_letters_are_found_by_scope_and_filters_with_their_redrive_records(
    dead_letters: StoreRig,
) -> None:
    async def scenario() -> None:
        store, sink = dead_letters.store, dead_letters.sink
        body = base64.b64encode(b"\xff\x00codec").decode()
        await sink.write({
            "dlq": [
                dlq("t1", "a", "0001", "transform", 11, at=1000),
                dlq("t2", "a1", "0001/0001", "bind", 12, at=2000),
                dlq("t3", "b", "0002", "transform", 13, at=3000, body=body, encoding="base64"),
                dlq("t4", "a", "0001", "rules", 14, at=4000, asset="dev-4"),
                dlq("t1", "a", "0001", "transform", 11, at=1000, deliveries=3),  # redelivered
            ],
            "events_raw": [
                raw("r1", "a", "0001", "bind", at=500),
                raw("r2", "a", "0001", "auth", at=600),  # a 401: never offered
                raw("t2", "a1", "0001/0001", "bind", at=2000),  # the lane's twin of t2's row
            ],
        })  # fmt: skip

        async def trackers(**kwargs: Any) -> list[str]:
            found = await store.find(DeadLetterQuery(**{"source": "dlq", **kwargs}))
            return [e.event_tracker_id for e in found]

        assert await trackers() == ["t1", "t2", "t3", "t4"]
        (t1,) = await store.find(DeadLetterQuery("dlq", event_tracker_id="t1"))
        assert (t1.deliveries, t1.stream_seq, t1.created_ms, t1.stage) == (3, 11, T0 + 1000,
                                                                          "transform")  # fmt: skip
        assert (t1.org_id, t1.path_key, t1.asset_id, t1.data_source_id) == ("a", "0001", "dev",
                                                                            "ds")  # fmt: skip
        assert t1.body == b'{"n":1}' and t1.redrive is None
        (t3,) = await store.find(DeadLetterQuery("dlq", event_tracker_id="t3"))
        assert t3.body == b"\xff\x00codec"
        assert await trackers(scope="0001") == ["t1", "t2", "t4"]  # a and its child a1
        assert await trackers(scope="0001", path_key="0001/0001") == ["t2"]
        assert await trackers(scope="000") == []  # a prefix of a pathKey is not a parent
        assert await trackers(stage="transform") == ["t1", "t3"]
        assert await trackers(asset_id="dev-4") == ["t4"]
        assert await trackers(since_ms=T0 + 2000, until_ms=T0 + 4000) == ["t2", "t3"]
        assert await trackers(after=t1.position, limit=2) == ["t2", "t3"]

        raws = await store.find(DeadLetterQuery("events_raw"))
        assert [(e.event_tracker_id, e.stage, e.error) for e in raws] == [("r1", "bind",
                                                                          "no asset")]  # fmt: skip
        assert raws[0].body == b'{"n":2}' and raws[0].stream_seq == 0
        assert await store.find(DeadLetterQuery("events_raw", stage="transform")) == []
        assert await store.find(DeadLetterQuery("events_raw", scope="0002")) == []

        await store.record([
            record("t1", "a", "0001", "transform", 11),
            record("r1", "a", "0001", "bind", 0, source="events_raw"),
        ])  # fmt: skip
        assert await trackers() == ["t2", "t3", "t4"]
        assert await store.find(DeadLetterQuery("events_raw")) == []
        (done,) = await store.find(DeadLetterQuery("dlq", redriven=True))
        assert done.event_tracker_id == "t1" and done.redrive is not None
        r = done.redrive
        assert (r.redrive_id, r.requested_by, r.msg_id, r.partition, r.stream_seq) == (
            "rd-1", "ops", "redrive:t1", 0, 911,
        )  # fmt: skip
        assert (r.redriven_ms, r.entry_seq, r.source) == (T0 + 3_600_000, 11, "dlq")
        assert await trackers(redriven=None) == ["t1", "t2", "t3", "t4"]

        # The redriven copy fails again: a new entry, pending, beside the redriven one.
        await sink.write({"dlq": [dlq("t1", "a", "0001", "transform", 31, at=1000)]})
        both = await store.find(DeadLetterQuery("dlq", event_tracker_id="t1", redriven=None))
        assert [(e.stream_seq, e.redrive is not None) for e in both] == [(11, True), (31, False)]
        assert await trackers() == ["t1", "t2", "t3", "t4"]

    asyncio.run(scenario())
