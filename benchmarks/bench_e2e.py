"""End to end on the embedded stack (NATS, Valkey, chDB, Ray on loopback), on this machine.

Measures, for the sample tenant's traffic (freezer JSON, two unmodified LoRaWAN codecs, three
business rules, route-level and rule-level HTTP triggers to a loopback sink):

1. **Drain, without HTTP**: N events published straight to JetStream, time until every one is
   stored and evaluated; beside it the **baseline**, a plain single-process Python consumer
   doing the same work (same stream, same processor, rules on the same Valkey, rows into chDB)
   with no Ray and no actors.
2. **Through the HTTP ingress**: N events posted to the batch endpoint as fast as the client
   can, time until all are stored.
3. **Latency at 70% load**: ingress -> stored p50/p99 at 70% of the measured drain rate.
4. **Partitions 1, 2, 4**: the drain rate as partitions (and lanes, up to 2) grow.
5. **Memory**: peak RSS of every process the stack started (Ray workers and services).

Run: ``python -m benchmarks.bench_e2e [--events N] [--partitions 1,2,4]``. Bounded in count and
time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents
from eventray.config.settings import Settings, load_settings
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.ingress import IngressPolicy
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.sink import WebhookSink
from eventray.testing.traffic import post_traffic

ROOT = Path(__file__).resolve().parent.parent


def _settings(
    data: Path, partitions: int, *, rules_in_lane: bool = True, batch_size: int = 1000
) -> Settings:
    return load_settings(
        data_dir=data,
        pipeline={
            "partitions": partitions,
            "lanes": min(2, partitions),
            "batch_size": batch_size,
            "linger_s": 0.02,
            "rules_in_lane": rules_in_lane,
        },
        ingress={"port": 0, "max_lag": 10_000_000},
        metrics={"enabled": False},
        ray={"num_cpus": 2},
    )


def _messages(catalog: Any, settings: Settings, count: int, seed: int = 11) -> list[Any]:
    """Accepted ingestions exactly as the ingress would publish them."""
    policy = IngressPolicy(
        catalog,
        partitions=settings.pipeline.partitions,
        subject_prefix=settings.nats.subject_prefix,
        max_body_bytes=1 << 20,
    )
    out = []
    for uplink in DeviceSimulator(catalog, seed=seed, bad_ratio=0.0).take(count):
        decision = policy.accept(
            catalog.data_sources[uplink.data_source_id], orjson.loads(uplink.body)
        )
        out.append(decision)
    return out


async def _publish(url: str, settings: Settings, messages: list[Any]) -> None:
    from eventray.pipeline.adapters.nats_bus import JetStreamBus

    bus = JetStreamBus(
        url=url, stream=settings.nats.stream, subject_prefix=settings.nats.subject_prefix
    )
    await bus.connect()
    js = bus.js
    for start in range(0, len(messages), 2000):
        futures = [
            await js.publish_async(
                m.subject, m.body, headers={"Nats-Msg-Id": m.event_tracker_id, **m.headers}
            )
            for m in messages[start : start + 2000]
        ]
        await asyncio.gather(*futures)
    await bus.close()


def _stored(stack: Stack) -> int:
    """Events the lanes have carried to the store (processed or sent to the DLQ). Read from
    the lanes' counters, not the store: polling the store would compete with its inserts."""
    import ray

    return sum(
        lane["events"] + lane["failed"]
        for lane in ray.get([lane.status.remote() for lane in stack.lanes()])
    )


def _wait_stored(stack: Stack, target: int, timeout_s: float = 300) -> float:
    start = time.perf_counter()
    while _stored(stack) < target:
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"only {_stored(stack)} of {target} stored")
        time.sleep(0.1)
    return time.perf_counter() - start


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of this process and everything it started,
    keyed by pid, with a short name (Ray actors show as ``ray::LaneActor`` etc.)."""
    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            cmd = proc.cmdline()
            name = proc.name()
            if name.startswith("ray::"):
                pass
            elif any("eventray.pipeline.scripts.host" in part for part in cmd):
                name = "script-host"
            elif cmd and "python" in cmd[0] and any(p.endswith(".py") for p in cmd[1:2]):
                name = Path(cmd[1]).stem
            out[proc.pid] = (name, times.user + times.system)
        except psutil.Error:
            pass
    return out


def _cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per process name."""
    spent: dict[str, float] = {}
    for pid, (name, total) in after.items():
        previous = before.get(pid, (name, 0.0))[1]
        spent[name] = spent.get(name, 0.0) + max(0.0, total - previous)
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def _rss_mb(stack: Stack) -> float:
    total = 0.0
    me = psutil.Process()
    seen = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            if proc.pid not in seen:
                seen.add(proc.pid)
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def run_stack(
    partitions: int,
    events: int,
    *,
    http: bool,
    latency: bool,
    rules_in_lane: bool = True,
    batch_size: int = 1000,
) -> dict[str, Any]:
    import ray

    data = Path(tempfile.mkdtemp(prefix="eventray-bench-"))
    settings = _settings(data, partitions, rules_in_lane=rules_in_lane, batch_size=batch_size)
    result: dict[str, Any] = {"partitions": partitions}
    with WebhookSink() as sink:
        stack = Stack(settings)
        try:
            stack.start()
            stack.apply(sample_documents(sink.url))
            time.sleep(1.5)
            catalog = load_catalog([ROOT / "config/samples/tenant"], compile_scripts=False)
            # warm-up: compile templates, open connections
            asyncio.run(
                _publish(
                    stack.endpoints.nats_url, settings, _messages(catalog, settings, 500, seed=1)
                )
            )  # type: ignore[union-attr]
            _wait_stored(stack, 500)
            ray.get([lane.reset_stats.remote() for lane in stack.lanes()])
            base = _stored(stack)
            messages = _messages(catalog, settings, events, seed=2)
            asyncio.run(_publish(stack.endpoints.nats_url, settings, messages))  # type: ignore[union-attr]
            cpu_before = _cpu_by_process()
            elapsed = _wait_stored(stack, base + events)
            result["drain_events_per_s"] = events / elapsed
            cpu = _cpu_delta(cpu_before, _cpu_by_process())
            result["cpu_s"] = cpu
            result["cpu_us_per_event"] = round(sum(cpu.values()) / events * 1e6)
            status = stack.status()
            result["stage_s"] = {
                k: round(sum(lane["stage_s"][k] for lane in status["lanes"]), 2)
                for k in status["lanes"][0]["stage_s"]
            }
            result["rss_mb"] = _rss_mb(stack)
            result["store"] = status["store"]
            if http:
                base = _stored(stack)
                started = time.perf_counter()
                traffic = post_traffic(
                    stack.ingress_url, catalog, events=events, concurrency=16, chunk=500, seed=3
                )
                accepted = traffic.answers.get(201, 0)
                _wait_stored(stack, base + accepted)
                result["http_events_per_s"] = accepted / (time.perf_counter() - started)
                result["http_post_only_per_s"] = traffic.sent / traffic.seconds
            if latency:
                # 70% of what the HTTP path sustains (it is the slower one, with the ingress)
                rate = 0.7 * result.get("http_events_per_s", result["drain_events_per_s"])
                ray.get([lane.reset_stats.remote() for lane in stack.lanes()])
                base = _stored(stack)
                traffic = post_traffic(
                    stack.ingress_url,
                    catalog,
                    events=int(rate * 15),
                    rate=rate,
                    concurrency=16,
                    chunk=100,
                    seed=4,
                )
                _wait_stored(stack, base + traffic.answers.get(201, 0))
                status = stack.status()
                result["latency_rate"] = rate
                result["latency_p50_ms"] = max(lane["latency_p50_ms"] for lane in status["lanes"])
                result["latency_p99_ms"] = max(lane["latency_p99_ms"] for lane in status["lanes"])
            result["rss_mb"] = max(result["rss_mb"], _rss_mb(stack))
        finally:
            stack.stop()
    return result


def run_baseline(events: int) -> dict[str, Any]:
    """A plain single-process consumer doing the same work: no Ray, no actors."""
    from datetime import UTC, datetime

    from eventray.cluster.services.nats_server import start_nats
    from eventray.cluster.services.redis_server import start_redis
    from eventray.pipeline.adapters.chdb_store import ChdbEventStore
    from eventray.pipeline.adapters.nats_bus import JetStreamBus
    from eventray.pipeline.adapters.redis_state import RedisStateStore
    from eventray.pipeline.clock import SystemClock
    from eventray.pipeline.processor import EventProcessor, Ingested
    from eventray.pipeline.rules.engine import RuleEngine
    from eventray.pipeline.scripts.cache import ScriptCache
    from eventray.pipeline.scripts.executor import TemplateExecutor
    from eventray.pipeline.storage.retention import RetentionPolicy
    from eventray.pipeline.storage.rows import RowContext, batch_rows

    data = Path(tempfile.mkdtemp(prefix="eventray-baseline-"))
    settings = _settings(data, 1)
    catalog = load_catalog([ROOT / "config/samples/tenant"], compile_scripts=False)
    with (
        start_nats(store_dir=data / "nats") as nats,
        start_redis(data_dir=data / "redis", persist=True) as redis,
    ):
        store = ChdbEventStore(path=data / "chdb")
        store.ensure_schema()
        state = RedisStateStore(url=redis.url)
        processor = EventProcessor(
            catalog,
            TemplateExecutor(ScriptCache()),
            RuleEngine(catalog.rule_set(), state, clock=SystemClock()),
        )
        rows_ctx = RowContext.from_catalog(catalog, RetentionPolicy())

        async def drain() -> float:
            bus = JetStreamBus(
                url=nats.url,
                stream=settings.nats.stream,
                subject_prefix=settings.nats.subject_prefix,
            )
            await bus.connect()
            await bus.ensure_stream(storage="file")
            await _publish(nats.url, settings, _messages(catalog, settings, events, seed=2))
            puller = await bus.puller(0)
            done = 0
            started = time.perf_counter()
            while done < events:
                batch = await puller.fetch(1000, timeout_s=1.0, linger_s=0.02)
                items = [
                    Ingested(
                        d.headers["Nats-Msg-Id"],
                        d.headers["Eventray-Data-Source"],
                        d.body,
                        d.headers["Eventray-Received-At"],
                        d.seq,
                    )
                    for d in batch
                ]
                processed = processor.process(items, partition="p0")
                for table, rows in batch_rows(
                    processed, rows_ctx, now=datetime.now(UTC), ingested=items
                ).items():
                    if rows:
                        store.insert(table, rows)
                await puller.ack_through(batch[-1])
                done += len(batch)
            elapsed = time.perf_counter() - started
            await puller.stop()
            await bus.close()
            return elapsed

        elapsed = asyncio.run(drain())
        rss = psutil.Process().memory_info().rss / 1e6
        state.close()
        store.close()
    return {"drain_events_per_s": events / elapsed, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", default="1,2,4")
    parser.add_argument(
        "--rule-actors",
        action="store_true",
        help="evaluate rules in one RulePartitionActor per partition (default: in the lanes)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="events per lane batch")
    parser.add_argument(
        "--no-http", action="store_true", help="drain only: skip the HTTP and latency runs"
    )
    args = parser.parse_args()
    baseline = run_baseline(args.events)
    print(
        f"\nbaseline (single process, no Ray): {baseline['drain_events_per_s']:,.0f} events/s drained, "
        f"RSS {baseline['rss_mb']:.0f} MB"
    )
    partitions = [int(p) for p in args.partitions.split(",")]
    rows = []
    for p in partitions:
        full = p == max(partitions) and not args.no_http
        r = run_stack(
            p,
            args.events,
            http=full,
            latency=full,
            rules_in_lane=not args.rule_actors,
            batch_size=args.batch_size,
        )
        rows.append(r)
        print(orjson.dumps(r).decode(), flush=True)
    print(
        "\n| partitions | drain events/s (no HTTP) | via HTTP ingress | p50 / p99 ms at 70% | RSS MB (all processes) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        http = f"{r['http_events_per_s']:,.0f}" if "http_events_per_s" in r else "-"
        lat = (
            f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} at {r['latency_rate']:,.0f}/s"
            if "latency_p50_ms" in r
            else "-"
        )
        print(
            f"| {r['partitions']} | {r['drain_events_per_s']:,.0f} | {http} | {lat} | {r['rss_mb']:,.0f} |"
        )
    print(
        f"| baseline, 1 process | {baseline['drain_events_per_s']:,.0f} | - | - | {baseline['rss_mb']:,.0f} |"
    )
    print("\nper-stage seconds (summed over lanes) in the drain run:", rows[-1]["stage_s"])
    for r in rows:
        print(
            f"CPU in the drain run, P{r['partitions']}: {r['cpu_us_per_event']} us/event over all "
            f"processes; seconds by process: {r['cpu_s']}"
        )


if __name__ == "__main__":
    main()
