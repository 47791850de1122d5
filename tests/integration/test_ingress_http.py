"""The HTTP ingress against a real nats-server: every status code of CONTRACTS.md, including
backpressure (429 with Retry-After) and a stream that stops answering (503 with Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from eventray.actors.ingress_app import IngressApp
from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.config.settings import IngressSettings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.ingress import IngressPolicy
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, as_dicts

pytestmark = pytest.mark.services

KEY = {"X-Api-Key": "sample-key-change-me-0001"}
READING = {
    "deviceId": "FRZ-0001",
    "ts": "2026-03-01T08:00:00Z",
    "readings": {"t": -18.0, "rh": 55},
    "door": "closed",
    "batt": 90,
}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path / "nats") as server:
        yield server


def bus_of(h: Harness) -> JetStreamBus:
    assert isinstance(h.app.stream, JetStreamBus)
    return h.app.stream


class Harness:
    def __init__(
        self, app: IngressApp, session: aiohttp.ClientSession, kept: list[dict[str, Any]]
    ) -> None:
        self.app = app
        self.session = session
        self.kept = kept  # the events_raw rows of refused authentications

    async def post(
        self, body: Any, *, ds: str = "ds-gateway-http", headers: dict[str, str] | None = None,
        batch: bool = False,
    ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        path = "/api/v1/events/batch" if batch else "/api/v1/events"
        url = f"http://127.0.0.1:{self.app.port}{path}?ds={ds}"
        async with self.session.post(
            url, data=raw, headers=KEY if headers is None else headers
        ) as r:
            return r.status, dict(r.headers), orjson.loads(await r.read())


@contextlib.asynccontextmanager
async def harness(
    server: RunningNats, samples_dir: Path, **settings: Any
) -> AsyncIterator[Harness]:
    catalog = load_catalog([samples_dir / "tenant"], compile_scripts=False)
    name = f"I{uuid.uuid4().hex[:8]}"
    bus = JetStreamBus(url=server.url, stream=name, subject_prefix=f"t.{name.lower()}")
    await bus.connect()
    await bus.ensure_stream(storage="file")
    ingress = IngressSettings(port=0, **settings)
    policy = IngressPolicy(
        catalog, partitions=2, subject_prefix=bus.subject_prefix,
        max_body_bytes=ingress.max_body_bytes,
    )  # fmt: skip
    kept: list[dict[str, Any]] = []

    async def keep(rows: dict[str, list[tuple[Any, ...]]]) -> None:
        kept.extend(as_dicts({"events_raw": rows["events_raw"]})["events_raw"])

    app = IngressApp(
        stream=bus,
        policy=policy,
        rows=RowContext.from_catalog(catalog, RetentionPolicy()),
        settings=ingress,
        partitions=2,
        keep=keep,
        lag_interval_s=0.1,
    )
    await app.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(app, session, kept)
    finally:  # also when the test fails: no server left listening
        await app.stop()
        await bus.close()


def test_answers_for_good_and_bad_requests(nats_server: RunningNats, samples_dir: Path) -> None:
    async def scenario() -> None:
        async with harness(nats_server, samples_dir, max_body_bytes=2048) as h:
            status, _, body = await h.post(READING)
            assert status == 201 and len(body["eventTrackerId"]) >= 16
            assert (await h.post(b"{not json"))[0] == 400
            status, _, body = await h.post(READING, headers={"X-Api-Key": "wrong"})
            assert status == 401
            assert h.kept and h.kept[-1]["data_source_id"] == "ds-gateway-http"  # kept, with why
            assert (await h.post(READING, ds="ds-nope"))[0] == 404
            status, _, body = await h.post({**READING, "pad": "x" * 4096})
            assert status == 413, body
            status, _, body = await h.post([READING, READING], batch=True)
            assert status == 207 and [r["status"] for r in body["results"]] == [201, 201]
            info = await bus_of(h).js.stream_info(bus_of(h).stream)
            assert info.state.messages == 3  # only what was answered 201 is in the stream

    asyncio.run(scenario())


def test_429_with_retry_after_when_the_stream_backs_up(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(nats_server, samples_dir, max_lag=5) as h:
            for partition in (0, 1):  # the lanes' durable consumers, with nobody pulling
                await bus_of(h).ensure_consumer(partition)
            for _ in range(6):
                assert (await h.post(READING))[0] == 201
            for _ in range(50):  # the lag is read every 0.1 s
                status, headers, body = await h.post(READING)
                if status == 429:
                    break
                await asyncio.sleep(0.1)
            assert status == 429, body
            assert headers["Retry-After"] == "1"
            assert "events waiting" in body["error"]

    asyncio.run(scenario())


def test_503_with_retry_after_when_the_stream_does_not_answer(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(nats_server, samples_dir, ack_timeout_s=1.0) as h:
            assert (await h.post(READING))[0] == 201
            nats_server.stop()
            status, headers, body = await h.post(READING)
            assert status == 503, body
            assert headers["Retry-After"] == "1"
            assert "stream unavailable" in body["error"]
            status, headers, body = await h.post([READING], batch=True)
            assert status == 207 and body["results"][0]["status"] == 503
            assert headers["Retry-After"] == "1"

    asyncio.run(scenario())
