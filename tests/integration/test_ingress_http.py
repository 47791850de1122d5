"""The HTTP ingress against a real nats-server: every status code of CONTRACTS.md, including
backpressure (429 with Retry-After) and a stream that stops answering (503 with Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
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
from eventray.pipeline.catalog import Catalog, build_catalog, load_catalog
from eventray.pipeline.ingress import IngressPolicy
from eventray.pipeline.jwks import JwksCache
from eventray.pipeline.loader import read_entities
from eventray.pipeline.models import DataSource, Organization
from eventray.pipeline.models.datasource import IpAllowlistAuth
from eventray.pipeline.models.org import IngestQuota
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, as_dicts

pytestmark = pytest.mark.services

KEY = {"X-Api-Key": "sample-key-change-me-0001"}
JSON = {"Content-Type": "application/json"}
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
        sent = {**JSON, **(KEY if headers is None else headers)}
        async with self.session.post(url, data=raw, headers=sent) as r:
            return r.status, dict(r.headers), orjson.loads(await r.read())


@contextlib.asynccontextmanager
async def harness(
    server: RunningNats,
    samples_dir: Path,
    *,
    catalog: Catalog | None = None,
    stream_bytes: int = -1,
    keys: JwksCache | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    catalog = catalog or load_catalog([samples_dir / "tenant"], compile_scripts=False)
    name = f"I{uuid.uuid4().hex[:8]}"
    bus = JetStreamBus(url=server.url, stream=name, subject_prefix=f"t.{name.lower()}")
    await bus.connect()
    await bus.ensure_stream(storage="file", max_bytes=stream_bytes)
    ingress = IngressSettings(port=0, **settings)
    policy = IngressPolicy(
        catalog, partitions=2, subject_prefix=bus.subject_prefix,
        max_body_bytes=ingress.max_body_bytes, keys=keys, leeway_s=ingress.jwt_leeway_s,
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
        # nobody drains: the prior rate (1 event/s) makes 6 queued events 6 s of work
        async with harness(nats_server, samples_dir, max_queue_s=5, drain_rate_prior=1) as h:
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
            # the estimate counts what was admitted since the last lag reading at once
            queued = float(body["error"].split(" s of work")[0])
            assert queued > 5
            expected = f"{queued:.1f} s of work queued (limit 5 s at 1 events/s); retry later"
            assert body["error"] == expected
            assert abs(int(headers["Retry-After"]) - math.ceil(queued - 5)) <= 1

    asyncio.run(scenario())


def test_an_organization_over_its_quota_gets_429_and_the_others_do_not(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    """factory-alpha (ds-gateway-http) may send 1 event/s with a burst of 3; acme-foods, its
    parent, has no quota and posts through ds-ttn-webhook meanwhile."""
    entities = read_entities([samples_dir / "tenant"], [])
    limited = [
        (source, e.model_copy(update={"ingest_quota": IngestQuota(events_per_second=1, burst=3)})
         if e.id == "factory-alpha" and isinstance(e, Organization) else e)
        for source, e in entities
    ]  # fmt: skip
    catalog = build_catalog(limited, compile_scripts=False)
    ttn = {"X-Downlink-Apikey": "sample-key-change-me-0002"}
    uplink = {"end_device_ids": {"dev_eui": "24E124136B316241"}, "uplink_message": {
        "f_port": 85, "frm_payload": "AXWTAmdnAQ==", "received_at": "2026-03-01T08:00:00Z"}}  # fmt: skip

    async def scenario() -> None:
        async with harness(nats_server, samples_dir, catalog=catalog) as h:
            answers = [(await h.post(READING))[0] for _ in range(3)]
            assert answers == [201, 201, 201]
            status, headers, body = await h.post(READING)
            assert status == 429 and body["error"] == (
                "quota of organization 'factory-alpha' (1 events/s, burst 3) exceeded; retry later"
            )
            assert headers["Retry-After"] == "1"
            status, _, body = await h.post([READING] * 5, batch=True)
            assert status == 429  # refused whole, before its body is parsed
            for _ in range(10):  # the parent organization is not held by its child's quota
                status, _, body = await h.post(uplink, ds="ds-ttn-webhook", headers=ttn)
                assert status == 201, body
            await asyncio.sleep(1.05)  # one token back
            assert (await h.post(READING))[0] == 201
            assert h.app.shed == {"quota": 2, "queue": 0}

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


def _nested(depth: int) -> bytes:
    """A reading nested ``depth`` objects deep (deeper than orjson would encode it)."""
    head = orjson.dumps(READING)[:-1]
    return head + b',"x":' * 1 + b'{"x":' * (depth - 2) + b"{}" + b"}" * (depth - 2) + b"}"


async def exchange(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    """One request written byte for byte (headers a client library would refuse to send);
    returns the status and the answer's body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        writer.write(body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    header, _, payload = raw.partition(b"\r\n\r\n")
    return int(header.split()[1]), payload


async def _raw(port: int, head: bytes, body: bytes) -> int:
    return (await exchange(port, head, body))[0]


def test_malformed_requests_get_a_4xx_naming_what_is_wrong(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(nats_server, samples_dir, max_batch_items=5) as h:
            # a batch over the item limit: 413, nothing published
            status, _, body = await h.post([READING] * 6, batch=True)
            assert status == 413 and "6 events (limit 5" in body["error"]
            # nesting the stages could not re-encode: 400 for that event only
            status, _, body = await h.post(_nested(300))
            assert status == 400 and body["error"] == "event nested deeper than 254 levels"
            assert (await h.post(_nested(200)))[0] == 201
            batch = (
                b"["
                + b",".join([orjson.dumps(READING), _nested(300), orjson.dumps(READING)])
                + b"]"
            )
            status, _, body = await h.post(batch, batch=True)
            assert [r["status"] for r in body["results"]] == [201, 400, 201]
            # content types: JSON types only (and none at all)
            for kind in ("text/plain", "application/x-www-form-urlencoded", "image/png"):
                status, _, body = await h.post(READING, headers={**KEY, "Content-Type": kind})
                assert status == 415 and kind in body["error"], kind
            latin = {**KEY, "Content-Type": "application/json; charset=latin-1"}
            assert (await h.post(READING, headers=latin))[0] == 415
            vendor = {**KEY, "Content-Type": "application/vnd.acme+json"}
            assert (await h.post(READING, headers=vendor))[0] == 201
            path = "/api/v1/events?ds=ds-gateway-http"
            untyped = f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY['X-Api-Key']}\r\n"
            assert await _raw(h.app.port, untyped.encode(), orjson.dumps(READING)) == 201
            # ambiguity: a query parameter or a credential header twice
            ambiguous = f"http://127.0.0.1:{h.app.port}/api/v1/events?ds=ds-gateway-http&ds=x"
            async with h.session.post(
                ambiguous, data=orjson.dumps(READING), headers={**JSON, **KEY}
            ) as r:
                assert r.status == 400 and "'ds' given more than once" in (await r.json())["error"]
            twice = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-Api-Key: {KEY['X-Api-Key']}\r\nX-Api-Key: other\r\n"
            )
            assert await _raw(h.app.port, twice.encode(), orjson.dumps(READING)) == 400
            # credentials that are not UTF-8 (or are Latin-1): 401, not 500
            for key in (b"\xff\xfe-key", "s\xe9same".encode("latin-1")):
                head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                status = await _raw(
                    h.app.port,
                    head.encode() + b"X-Api-Key: " + key + b"\r\n",
                    orjson.dumps(READING),
                )
                assert status == 401, key
            assert h.app.internal_errors == 0

    asyncio.run(scenario())


def test_refused_requests_keep_a_bounded_prefix_within_a_budget(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(
            nats_server, samples_dir, refused_keep_bytes=100, refused_keep_per_minute=3
        ) as h:
            big = {**READING, "pad": "x" * 100_000}
            for _ in range(5):
                assert (await h.post(big, headers={"X-Api-Key": "wrong"}))[0] == 401
            assert len(h.kept) == 3 and h.app.refusals_not_kept == 2
            row = h.kept[0]
            assert len(row["body"]) <= 100
            assert "the first 100 kept" in row["reason"] and "invalid API key" in row["reason"]

    asyncio.run(scenario())


def test_no_input_makes_a_500(nats_server: RunningNats, samples_dir: Path) -> None:
    """Seeded random requests: bodies of random bytes, JSON of random shapes, random header
    bytes, both endpoints. Each gets an answer below 500 (or 207 per event) and the log stays
    quiet."""
    import random

    rng = random.Random(6)

    def junk_json(depth: int = 0) -> Any:
        pick = rng.randrange(8 if depth < 4 else 5)
        if pick == 0:
            return rng.choice([None, True, False, 0, -1, 2**63, 1e308, -0.0])
        if pick == 1:
            return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(20)))
        if pick == 2:
            return rng.random() * 10 ** rng.randrange(-30, 30)
        if pick in (3, 4):
            return dict(READING)
        if pick == 5:
            return [junk_json(depth + 1) for _ in range(rng.randrange(5))]
        return {str(rng.randrange(99)): junk_json(depth + 1) for _ in range(rng.randrange(5))}

    async def scenario() -> None:
        async with harness(nats_server, samples_dir, max_body_bytes=4096) as h:
            path = "/api/v1/events"
            for n in range(300):
                batch = n % 2 == 1
                target = f"{path}/batch" if batch else path
                if n % 3 == 0:
                    body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
                else:
                    body = orjson.dumps([junk_json() for _ in range(3)] if batch else junk_json())
                header = bytes(rng.choice(b"abc\xff\xfe\x80 :;=,\t\"'\\") for _ in range(8))
                kind = rng.choice([b"application/json", b"text/plain", b"", header])
                head = (
                    f"POST {target}?ds={rng.choice(['ds-gateway-http', 'ds-ttn-webhook', ''])} "
                    "HTTP/1.1\r\nHost: x\r\n"
                ).encode()
                head += b"Content-Type: " + kind + b"\r\n" if kind else b""
                head += b"X-Api-Key: " + rng.choice([KEY["X-Api-Key"].encode(), header]) + b"\r\n"
                head += b"X-Junk: " + header + b"\r\n"
                status = await _raw(h.app.port, head, body)
                assert status < 500, (status, head, body)
            assert h.app.internal_errors == 0

    asyncio.run(scenario())


def test_the_ingress_warns_when_the_stream_drops_events_no_lane_took(
    nats_server: RunningNats, samples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with harness(nats_server, samples_dir, stream_bytes=64 * 1024) as h:
            bus = bus_of(h)
            for partition in (0, 1):  # the lanes' durable consumers, with nobody pulling
                await bus.ensure_consumer(partition)
            for _ in range(5):
                assert (await h.post(READING))[0] == 201
            await asyncio.sleep(0.3)  # the watcher (every 0.1 s) notes what waits
            assert h.app.stream_drops == {}
            subject = (await bus.js.get_msg(bus.stream, seq=1)).subject  # the readings'
            assert subject is not None
            filler = [OutboxMessage(subject, b"x" * 500, msg_id=f"f{n}") for n in range(400)]
            assert await bus.append(filler, timeout_s=5) == [""] * 400  # 200 KB: over the cap
            for _ in range(50):
                if h.app.stream_drops:
                    break
                await asyncio.sleep(0.1)
            [partition] = h.app.stream_drops  # the other partition lost nothing
            assert subject.endswith(f".p{partition}")
            assert "dropped before a lane took them" in h.app.last_drop
            assert "the stream dropped events of partition" in caplog.text
            assert "they are lost" in caplog.text

    asyncio.run(scenario())


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    """ds-gateway-http allows 198.51.100.0/24 only; the test client is 127.0.0.1, which it
    claims to be forwarding for 198.51.100.7."""
    entities = read_entities([samples_dir / "tenant"], [])
    allowlisted = [
        (source, e.model_copy(update={"auth": IpAllowlistAuth(cidrs=["198.51.100.0/24"])})
         if e.id == "ds-gateway-http" and isinstance(e, DataSource) else e)
        for source, e in entities
    ]  # fmt: skip
    catalog = build_catalog(allowlisted, compile_scripts=False)
    forwarded = {**JSON, "X-Forwarded-For": "192.0.2.1, 198.51.100.7"}

    async def scenario() -> None:
        async with harness(nats_server, samples_dir, catalog=catalog) as h:
            status, _, body = await h.post(READING, headers=forwarded)
            assert (
                status == 401
                and body["error"] == "client address 127.0.0.1 is not in the allowlist"
            )
        async with harness(nats_server, samples_dir, catalog=catalog,
                           trusted_proxies=("127.0.0.1/32",)) as h:  # fmt: skip
            status, _, body = await h.post(READING, headers=forwarded)
            assert status == 201, body  # the proxy's nearest untrusted hop: 198.51.100.7
            status, _, body = await h.post(
                READING, headers={**JSON, "X-Forwarded-For": "192.0.2.1"}
            )
            assert status == 401 and "192.0.2.1 is not in the allowlist" in body["error"]
            status, _, body = await h.post(READING, headers=JSON)  # no header: the peer itself
            assert status == 401

    asyncio.run(scenario())


def test_trusted_proxies_that_are_not_networks_are_refused_when_loaded() -> None:
    with pytest.raises(ValueError, match=re.escape("'proxy.local' is not an IP network")):
        IngressSettings(trusted_proxies=("proxy.local",))
    assert IngressSettings(trusted_proxies=("10.0.0.1",)).trusted_proxies == ("10.0.0.1/32",)
