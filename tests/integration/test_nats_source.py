"""The partition source on its own NATS protocol connection, against a real nats-server.

Pins what the lane relies on: ingested fields from the ingress's headers, stream order, one
ack per batch, batches closing on size or age, and, after the server restarts on its data
directory, every unacknowledged event delivered again to the reconnected source.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.ingress import ingested_headers

pytestmark = pytest.mark.services


def _bus(server: RunningNats) -> JetStreamBus:
    name = f"T{uuid.uuid4().hex[:8]}"
    return JetStreamBus(url=server.url, stream=name, subject_prefix=f"t.{name.lower()}")


async def _publish(bus: JetStreamBus, count: int, *, start: int = 0, partition: int = 0) -> None:
    for n in range(start, start + count):
        await bus.publish(
            f"{bus.subject_prefix}.p{partition}",
            f'{{"n": {n}}}'.encode(),
            msg_id=f"trk-{n}",
            headers=ingested_headers(
                data_source_id="ds-1", received_ms=1_700_000_000_000 + n, org_id="o",
                asset_id=f"a-{n}" if n % 2 else "", revision=n % 3,
            ),
        )  # fmt: skip


def test_fields_order_acks_and_batch_sizes(tmp_path: Path) -> None:
    async def scenario() -> None:
        with start_nats(store_dir=tmp_path / "nats") as server:
            bus = _bus(server)
            await bus.connect()
            await bus.ensure_stream(storage="file")
            await _publish(bus, 1200)
            source = await bus.source(0)
            seen = []
            while len(seen) < 1200:
                batch = await source.fetch(500, timeout_s=2, linger_s=0.05)
                assert 0 < len(batch) <= 500
                seen.extend(batch)
                await source.ack_through(batch[-1])
            first = seen[0]
            assert (first.event_tracker_id, first.data_source_id, first.body) == (
                "trk-0", "ds-1", b'{"n": 0}'
            )  # fmt: skip
            assert first.received_ms == 1_700_000_000_000 and first.delivered == 1
            assert (seen[0].asset_id, seen[1].asset_id) == ("", "a-1")
            assert [i.revision for i in seen[:4]] == [0, 1, 2, 0]  # the config revision
            assert [i.seq for i in seen] == sorted(i.seq for i in seen)
            assert [i.event_tracker_id for i in seen] == [f"trk-{n}" for n in range(1200)]
            for _ in range(50):
                if await source.pending() == 0:
                    break
                await asyncio.sleep(0.02)
            assert await source.pending() == 0  # the fire-and-forget acks landed
            empty_started = time.monotonic()
            assert await source.fetch(500, timeout_s=0.3, linger_s=0.05) == []
            assert time.monotonic() - empty_started >= 0.25  # waited its timeout
            await source.close()
            await bus.close()

    asyncio.run(scenario())


def test_a_batch_closes_on_age_when_events_trickle_in(tmp_path: Path) -> None:
    async def scenario() -> None:
        with start_nats(store_dir=tmp_path / "nats") as server:
            bus = _bus(server)
            await bus.connect()
            await bus.ensure_stream(storage="memory")
            source = await bus.source(0)

            async def trickle() -> None:
                for n in range(40):
                    await _publish(bus, 1, start=n)
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(trickle())
            started = time.monotonic()
            batch = await source.fetch(1000, timeout_s=5, linger_s=0.05)
            took = time.monotonic() - started
            await task
            assert 1 <= len(batch) < 40  # closed by age, not by size
            assert took < 1.0
            await source.close()
            await bus.close()

    asyncio.run(scenario())


def test_after_a_server_restart_unacknowledged_events_come_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = tmp_path / "nats"
        server = start_nats(store_dir=store)
        port = server.port
        try:
            bus = _bus(server)
            await bus.connect()
            await bus.ensure_stream(storage="file")
            await _publish(bus, 300)
            source = await bus.source(0)
            first = await source.fetch(100, timeout_s=2, linger_s=0.05)
            await source.ack_through(first[-1])
            held = await source.fetch(100, timeout_s=2, linger_s=0.05)  # never acknowledged
            assert held and held[0].event_tracker_id == f"trk-{len(first)}"
            await asyncio.sleep(0.2)
            server.stop()
            with pytest.raises(Exception):  # noqa: B017 - any bus error: the lane retries
                await source.fetch(100, timeout_s=0.5, linger_s=0.05)
            server = start_nats(store_dir=store, port=port, passwords=server.passwords)
            again: list[str] = []
            deadline = time.monotonic() + 20
            while len(again) < 300 - len(first) and time.monotonic() < deadline:
                try:
                    batch = await source.fetch(200, timeout_s=1, linger_s=0.05)
                except Exception:
                    await asyncio.sleep(0.2)
                    continue
                again.extend(i.event_tracker_id for i in batch)
                if batch:
                    await source.ack_through(batch[-1])
            assert again == [f"trk-{n}" for n in range(len(first), 300)]
            await source.close()
            await bus.close()
        finally:
            server.stop()

    asyncio.run(scenario())


def test_concurrent_appends_on_a_fresh_connection_are_all_acknowledged(tmp_path: Path) -> None:
    # Callers racing to open the connection must share one, and each waits for its own
    # acknowledgements only (this lost every acknowledgement of all but one caller once).
    from eventray.pipeline.ports import OutboxMessage

    async def scenario() -> None:
        with start_nats(store_dir=tmp_path / "nats") as server:
            bus = _bus(server)
            await bus.connect()
            await bus.ensure_stream(storage="memory")

            async def batch(k: int) -> list[str]:
                messages = [
                    OutboxMessage(f"{bus.subject_prefix}.p{n % 3}", b"{}", f"m{k}-{n}")
                    for n in range(300)
                ]
                return await bus.append(messages, timeout_s=5)

            results = await asyncio.gather(*(batch(k) for k in range(8)))
            assert all(error == "" for errors in results for error in errors)
            info = await bus.js.stream_info(bus.stream)
            assert info.state.messages == 8 * 300
            again = await batch(0)  # the same ids inside the duplicate window: stored once
            assert again == [""] * 300
            assert (await bus.js.stream_info(bus.stream)).state.messages == 8 * 300
            await bus.close()

    asyncio.run(scenario())
