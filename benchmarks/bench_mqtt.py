"""MQTT ingestion: device sessions the embedded broker holds, and QoS 1 uplinks into the event
stream beside HTTP POSTs into the same stream, in one run.

``python -m benchmarks.bench_mqtt [--sessions 1000] [--events 20000] [--rounds 3] [--json P]``

* **Sessions**: ``--sessions`` devices, each its own broker user (username, bcrypt hash of
  ``mqtt.bcrypt_cost``, its own topic), log in over MQTT 3.1.1 and stay connected; measured:
  how long the logins took (the broker checks each bcrypt hash), the broker's CPU seconds and
  its resident memory before and after (per session). Every device has the same password
  hash: hashing 1,000 distinct ones would take the bench ~45 s at cost 8 and change nothing
  the broker does per login.
* **Ingestion** (timed from the first request; the load process's imports and logins are
  not): the ingress (with its MQTT bridge, as in a stack, logged in as the ``ingress``
  role) in this process; the load from another process (so the client's work does not share
  this one's GIL): 20 devices publishing QoS 1 with up to 100 in flight each (paho-mqtt), then
  the same number of events as single HTTP POSTs, 32 at a time (aiohttp). A run ends when the
  event stream holds every event; events/s is events over that time. Latency per event:
  publish to PUBACK (the broker stored it), POST to 201 (the stream stored it). The bridge
  then brings each stored uplink into the stream: the MQTT rate includes that step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from eventray.actors.ingress_app import IngressApp
from eventray.cluster.mqtt_accounts import DeviceSync, hash_password, mqtt_login
from eventray.cluster.roles import nats_roles
from eventray.cluster.services.nats_server import MQTT_PROBE, MqttListener, RunningNats, start_nats
from eventray.config.settings import IngressSettings, MqttSettings, NatsSettings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.adapters.nats_uplinks import ensure_bridge_consumer
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.ingress import IngressPolicy
from eventray.pipeline.loader import read_entities
from eventray.pipeline.models import Asset, DataSource
from eventray.pipeline.mqtt import uplink_topic
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext

SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples" / "tenant"
PASSWORD = "bench-device-secret"
PUBLISHERS = 20
IN_FLIGHT = 100
HTTP_CONCURRENCY = 32
HTTP_KEY = "sample-key-change-me-0001"


def catalog_of(devices: int, password_hash: str) -> Catalog:
    issues: list[Any] = []
    entities: list[tuple[str, Any]] = list(read_entities([SAMPLES], issues))
    entities.append(("bench", DataSource.model_validate({
        "id": "ds-mqtt", "orgId": "factory-alpha", "name": "MQTT devices", "protocol": "mqtt",
        "auth": {"type": "none"}, "assetBind": {"uuidFields": ["deviceId"]}})))  # fmt: skip
    for i in range(devices):
        entities.append(("bench", Asset.model_validate({
            "id": f"dev-{i:05d}", "orgId": "alpha-cold-room-1", "assetUUID": f"DEV-{i:05d}",
            "name": f"Device {i}", "templateId": "freezer-json", "routeGroupIds": ["rg-cold-chain"],
            "protocol": {"type": "mqtt",
                         "mqtt": {"username": f"dev-{i:05d}", "password": password_hash}}})))  # fmt: skip
    return build_catalog(entities, compile_scripts=False)


def reading(device: int, n: int) -> bytes:
    return json.dumps({"deviceId": f"DEV-{device:05d}", "ts": "2026-03-01T08:00:00Z",
                       "readings": {"t": -18.0 + (n % 7) / 10, "rh": 55}, "door": "closed",
                       "batt": 90, "n": n}).encode()  # fmt: skip


# ---------------------------------------------------------------- sessions
async def _session(port: int, username: str) -> asyncio.StreamWriter:
    def text(value: str) -> bytes:
        return struct.pack("!H", len(value)) + value.encode()

    body = text("MQTT") + bytes([4, 0b11000010]) + struct.pack("!H", 600)
    body += text(f"{username}-c") + text(username) + text(PASSWORD)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes([0x10, len(body)]) + body)
    connack = await asyncio.wait_for(reader.readexactly(4), 120)
    if connack[3] != 0:
        raise ConnectionError(f"{username}: CONNACK {connack[3]}")
    return writer


async def hold_sessions(server: RunningNats, sessions: int) -> dict[str, float]:
    assert server.mqtt is not None
    broker = psutil.Process(server.process.pid)
    before_rss, before_cpu = broker.memory_info().rss, sum(broker.cpu_times()[:2])
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> asyncio.StreamWriter:
        async with gate:
            return await _session(server.mqtt.port, f"dev-{i:05d}")  # type: ignore[union-attr]

    started = time.perf_counter()
    writers = await asyncio.gather(*(one(i) for i in range(sessions)))
    took = time.perf_counter() - started
    await asyncio.sleep(2.0)  # let the broker settle its per-session state
    after_rss, after_cpu = broker.memory_info().rss, sum(broker.cpu_times()[:2])
    connected = sum(1 for w in writers if not w.is_closing())
    for writer in writers:
        writer.write(b"\xe0\x00")
        writer.close()
    return {
        "sessions": connected,
        "login_s": round(took, 2),
        "logins_per_s": round(sessions / took, 1),
        "broker_cpu_s": round(after_cpu - before_cpu, 2),
        "broker_rss_before_mb": round(before_rss / 2**20, 1),
        "broker_rss_after_mb": round(after_rss / 2**20, 1),
        "kib_per_session": round((after_rss - before_rss) / 1024 / sessions, 1),
    }


# ---------------------------------------------------------------- load (another process)
def _mqtt_load(port: int, events: int, out: Any, ready: Any, go: Any) -> None:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    per = events // PUBLISHERS
    latencies: list[float] = []
    connected = [0]
    lock = threading.Lock()

    def device(i: int) -> None:
        sent: dict[int, float] = {}
        done = threading.Event()
        slots = threading.Semaphore(IN_FLIGHT)
        acked = [0]

        def published(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
            at = time.perf_counter()
            with lock:
                latencies.append(at - sent.pop(mid, at))
            slots.release()
            acked[0] += 1
            if acked[0] == per:
                done.set()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{i}")
        client.username_pw_set(f"dev-{i:05d}", PASSWORD)
        client.max_inflight_messages_set(IN_FLIGHT)
        client.max_queued_messages_set(0)
        client.on_publish = published
        client.connect("127.0.0.1", port)
        client.loop_start()
        topic = uplink_topic("ds-mqtt", f"DEV-{i:05d}")
        with lock:
            connected[0] += 1
            if connected[0] == PUBLISHERS:
                ready.set()
        go.wait()
        for n in range(per):
            slots.acquire()
            info = client.publish(topic, reading(i, n), qos=1)
            sent.setdefault(info.mid, time.perf_counter())
        done.wait(300)
        client.disconnect()
        client.loop_stop()

    threads = [threading.Thread(target=device, args=(i,)) for i in range(PUBLISHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(latencies)


def _http_load(url: str, events: int, out: Any, ready: Any, go: Any) -> None:
    import aiohttp

    async def run() -> list[float]:
        latencies: list[float] = []
        queue = iter(range(events))
        headers = {"Content-Type": "application/json", "X-Api-Key": HTTP_KEY}

        async def worker(session: aiohttp.ClientSession) -> None:
            for n in queue:
                t0 = time.perf_counter()
                async with session.post(url, data=reading(n % 5, n), headers=headers) as r:
                    await r.read()
                    if r.status != 201:
                        raise RuntimeError(f"HTTP {r.status}")
                latencies.append(time.perf_counter() - t0)

        async with aiohttp.ClientSession() as session:
            ready.set()
            await asyncio.to_thread(go.wait)
            await asyncio.gather(*(worker(session) for _ in range(HTTP_CONCURRENCY)))
        return latencies

    out.put(asyncio.run(run()))


async def _drive(
    target: Any, args: tuple[Any, ...], bus: JetStreamBus, expected: int
) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    out, ready, go = context.Queue(), context.Event(), context.Event()
    start_count = (await bus.js.stream_info(bus.stream)).state.messages
    process = context.Process(target=target, args=(*args, out, ready, go))
    process.start()
    if not await asyncio.to_thread(ready.wait, 120):
        raise RuntimeError("the load process did not get ready")
    started = time.perf_counter()  # from the first request: imports and logins are not timed
    go.set()
    while (await bus.js.stream_info(bus.stream)).state.messages < start_count + expected:
        await asyncio.sleep(0.02)
        if not process.is_alive() and process.exitcode:
            raise RuntimeError(f"load process failed ({process.exitcode})")
    took = time.perf_counter() - started
    latencies = sorted(await asyncio.to_thread(out.get, True, 60))
    process.join(30)
    return {
        "events_per_s": round(expected / took),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
    }


async def run(sessions: int, events: int, rounds: int) -> dict[str, Any]:
    cost = MqttSettings().bcrypt_cost
    password_hash = hash_password(PASSWORD, cost)
    catalog = catalog_of(max(sessions, PUBLISHERS), password_hash)
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_nats(
            store_dir=Path(tmp) / "nats", roles=nats_roles(NatsSettings()), mqtt=MqttListener()
        ) as server,
    ):
        assert server.mqtt is not None
        admin = JetStreamBus(url=server.url)
        await admin.connect()
        await admin.ensure_stream(storage="file")
        assert (
            mqtt_login("127.0.0.1", server.mqtt.port, MQTT_PROBE, server.passwords[MQTT_PROBE]) == 0
        )
        await ensure_bridge_consumer(admin.js)
        sync = DeviceSync(lambda: server, lambda: (catalog, 1), cost=cost, interval_s=60)
        sync.start()
        await asyncio.sleep(1.0)  # the reload
        held = await hold_sessions(server, sessions)
        ingress = JetStreamBus(url=server.url_for("ingress"), inbox_prefix="_INBOX.ingress")
        await ingress.connect()
        settings = IngressSettings(
            port=0, max_queue_s=3600, shed_heavy_s=3600
        )  # the path, not admission
        policy = IngressPolicy(catalog, partitions=2, subject_prefix=ingress.subject_prefix,
                               max_body_bytes=settings.max_body_bytes)  # fmt: skip

        async def keep(rows: Any) -> None:
            return None

        app = IngressApp(stream=ingress, policy=policy, settings=settings, partitions=2, keep=keep,
                         rows=RowContext.from_catalog(catalog, RetentionPolicy()), mqtt=True)  # fmt: skip
        await app.start()
        url = f"http://127.0.0.1:{app.port}/api/v1/events?ds=ds-gateway-http"
        results: dict[str, list[dict[str, float]]] = {"mqtt_qos1": [], "http_post": []}
        try:
            for _ in range(rounds):
                results["mqtt_qos1"].append(
                    await _drive(_mqtt_load, (server.mqtt.port, events), admin, events)
                )
                results["http_post"].append(await _drive(_http_load, (url, events), admin, events))
        finally:
            sync.stop()
            await app.stop()
            await ingress.close()
            await admin.close()
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    return {"bcrypt_cost": cost, "sessions": held, "rounds": results, "medians": medians,
            "mqtt_bridge": app.mqtt_counts}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args.sessions, args.events, args.rounds))
    s = report["sessions"]
    print(f"MQTT sessions (bcrypt cost {report['bcrypt_cost']}): {s['sessions']} held; logins "
          f"{s['login_s']} s ({s['logins_per_s']}/s, broker CPU {s['broker_cpu_s']} s); broker "
          f"RSS {s['broker_rss_before_mb']} -> {s['broker_rss_after_mb']} MB "
          f"({s['kib_per_session']} KiB per session)")  # fmt: skip
    print(f"\n| ingestion into the stream ({args.events:,} events, median of {args.rounds}) "
          "| events/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")  # fmt: skip
    for name, label in (("http_post", "HTTP POST, 32 concurrent (baseline)"),
                        ("mqtt_qos1", f"MQTT QoS 1, {PUBLISHERS} devices x {IN_FLIGHT} in flight")):  # fmt: skip
        m = report["medians"][name]
        print(f"| {label} | {m['events_per_s']:,.0f} | {m['p50_ms']} | {m['p99_ms']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
