"""End to end on the embedded stack (NATS, Valkey, chDB, Ray on loopback), on this machine.

For the sample tenant's traffic (freezer JSON, two unmodified LoRaWAN codecs, three business
rules, route-level and rule-level triggers delivered to a loopback webhook sink and a loopback
SMTP server), in one run and side by side:

1. **Baseline**: one plain Python process doing the same work (the same
   :class:`~eventray.pipeline.lane.Lane` and :class:`~eventray.pipeline.batch.BatchPipeline`
   over the same stream, Valkey and an in-process chDB, plus the trigger dispatcher), no Ray.
2. **eventray on Ray at 1 and at 2 lanes** (4 partitions): the drain rate of a backlog of N
   events published straight to JetStream while the lanes were paused ("no HTTP"); the same
   through the HTTP ingress's batch endpoint; ingress -> stored latency p50/p99 at 70% of the
   HTTP rate; CPU seconds per event of every process during the drain; RSS of every process,
   idle and after the load.

Run: ``python -m benchmarks.bench_e2e [--events N] [--lanes 1,2] [--partitions 4]
[--no-http] [--json PATH]``. The per-stage topology: ``--script-actors N --rule-actors N``
(``pipeline.script_actors`` / ``rule_actors``; 0 = in the lanes) and a tenant mix,
``--mix sample|js|rules`` (``js``: every conversion script does ~3,000 more loop steps per
event; ``rules``: every business rule is there six times, each with its own state). Bounded in count and time; loopback only. Figures are printed as
tables and written as JSON (by default under the data directory, ``.eventray/bench/``).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents, sample_secrets
from eventray.config.settings import Settings, load_settings
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.ingress import Accepted, IngressPolicy
from eventray.pipeline.loader import entity_from_dict
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.tenants import copy_tenants
from eventray.testing.traffic import post_traffic

ROOT = Path(__file__).resolve().parent.parent


CHUNK = 160
"""Uplinks per tick of the HTTP traffic, posted as one request per data source (with 8 tenants,
16 sources: ~10 events per request). The rate and the latency phases post alike."""


MIXES = ("sample", "js", "rules")
_JS_WORK = "let __w = 0; for (let __i = 0; __i < 3000; __i++) { __w += Math.sqrt(__i); }\n"
_RULE_COPIES = 6


def _documents(sinks: _Sinks, tenants: int, mix: str = "sample") -> list[dict[str, Any]]:
    """The sample tenant's customer copied ``tenants`` times (see ``eventray.testing.tenants``:
    with one customer, three organizations own every device, so at most three partitions are
    ever busy), its triggers pointed at the sinks; made JS-heavy or rule-heavy by ``mix``."""
    documents = copy_tenants(sample_documents(sinks.webhook, sinks.smtp_port), tenants)
    return mix_documents(documents, mix)


def mix_documents(documents: list[dict[str, Any]], mix: str) -> list[dict[str, Any]]:
    """``js``: each template's conversion script does more work per event (the scripts stage
    dominates); ``rules``: each business rule is bound :data:`_RULE_COPIES` times (the rules
    stage dominates: more evaluations and more state per event)."""
    if mix == "js":
        return [
            {**d, "scriptConversion": _JS_WORK + d["scriptConversion"]}
            if d.get("kind") == "AssetTemplate" and d.get("scriptConversion")
            else d
            for d in documents
        ]
    if mix == "rules":
        extra = [
            {**d, "id": f"{d['id']}-x{n}", "name": f"{d.get('name', d['id'])} x{n}"}
            for d in documents
            if d.get("kind") == "BusinessRule"
            for n in range(1, _RULE_COPIES)
        ]
        return [*documents, *extra]
    return documents


def _catalog(documents: list[dict[str, Any]]) -> Catalog:
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("bench", d, issues) for d in documents]
    if issues:
        raise ConfigError(issues)
    return build_catalog([("bench", e) for e in entities if e is not None], compile_scripts=False)


def _settings(
    data: Path,
    *,
    partitions: int,
    lanes: int,
    batch_size: int = 0,
    script_actors: int = 0,
    rule_actors: int = 0,
) -> Settings:
    pipeline: dict[str, Any] = {
        "partitions": partitions,
        "lanes": lanes,
        "script_actors": script_actors,
        "rule_actors": rule_actors,
    }
    if batch_size:
        pipeline["batch_size"] = batch_size
    return load_settings(
        data_dir=data,
        pipeline=pipeline,
        ingress={"port": 0},
        mqtt={"port": 0},
        api={"enabled": False},  # the management API is not measured here (its own bench)
        metrics={"enabled": False},
        triggers={"allow_networks": ("127.0.0.1/32",)},  # the sinks listen on loopback
        ray={"num_cpus": 2, "include_dashboard": False},  # figures comparable with earlier runs
    )


def _messages(catalog: Catalog, settings: Settings, count: int, seed: int) -> list[Accepted]:
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
            catalog.data_sources[uplink.data_source_id], orjson.loads(uplink.body), raw=uplink.body
        )
        assert isinstance(decision, Accepted)
        out.append(decision)
    return out


async def _publish(url: str, settings: Settings, messages: list[Accepted]) -> None:
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


# ---------------------------------------------------------------------- processes
def _name(proc: psutil.Process) -> str:
    name = proc.name()
    if name.startswith("ray::"):
        return name
    cmd = proc.cmdline()
    if any("scripts.host" in part for part in cmd):
        return "script-host"
    if any(part.endswith("dashboard.py") for part in cmd):
        return "ray-dashboard"
    if any("log_monitor" in part for part in cmd):
        return "ray-log-monitor"
    if any("monitor.py" in part for part in cmd):
        return "ray-monitor"
    if proc.pid == psutil.Process().pid:
        return "driver (bench)"
    if any("testing.serve" in part for part in cmd):
        return "sinks (bench)"
    return name


def _processes() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _cpu() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in _processes():
        try:
            times = proc.cpu_times()
            out[proc.pid] = (_name(proc), times.user + times.system)
        except psutil.Error:
            pass
    return out


def _cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    spent: dict[str, float] = {}
    for pid, (name, total) in after.items():
        spent[name] = spent.get(name, 0.0) + max(0.0, total - before.get(pid, (name, 0.0))[1])
    return {k: round(v, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def _rss() -> dict[str, float]:
    """RSS in MB per process name (summed over processes of one name)."""
    out: dict[str, float] = {}
    for proc in _processes():
        try:
            name = _name(proc)
            out[name] = out.get(name, 0.0) + proc.memory_info().rss / 1e6
        except psutil.Error:
            pass
    return {k: round(v) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _pipeline_us(cpu: dict[str, float], events: int, *, bench_process: bool) -> int:
    """CPU per event of the pipeline's own processes: without the loopback sinks, and
    without the benchmark's driver when the pipeline runs elsewhere (the Ray stack)."""
    excluded = {"sinks (bench)"} | ({"driver (bench)"} if bench_process else set())
    return round(sum(v for k, v in cpu.items() if k not in excluded) / events * 1e6)


# ---------------------------------------------------------------------- the stack
def _stored(stack: Stack) -> int:
    """Events the lanes have carried to the store (processed or sent to the DLQ), from the
    lanes' counters (polling the store would compete with its inserts)."""
    import ray

    return sum(ray.get([lane.handled.remote() for lane in stack.lanes()]))


def _wait(
    check: Callable[[], int], target: int, timeout_s: float = 600, trace: list[Any] | None = None
) -> float:
    start = time.perf_counter()
    while (done := check()) < target:
        if trace is not None:
            trace.append((round(time.perf_counter() - start, 2), done))
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"only {done} of {target} handled")
        time.sleep(0.1)
    return time.perf_counter() - start


def _settle(stack: Stack, sinks: _Sinks, *, quiet_s: float = 1.5, timeout_s: float = 180) -> None:
    """Wait until the partitions are drained and the trigger deliveries a phase caused have
    reached the sinks (none for ``quiet_s``), so the next phase measures itself, not the
    previous one's e-mails."""
    stack.wait_idle(timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    last, since = sinks.counts(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = sinks.counts()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


class _Sinks:
    """The loopback webhook and SMTP sinks in a process of their own
    (``eventray.testing.serve``), so their work is not charged to what is measured."""

    def __enter__(self) -> _Sinks:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventray.testing.serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        ready = orjson.loads(self.process.stdout.readline())
        self.webhook: str = ready["webhook"]
        self.smtp_port: int = ready["smtp_port"]
        return self

    def counts(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"\n")
        self.process.stdin.flush()
        counts: dict[str, int] = orjson.loads(self.process.stdout.readline())
        return counts

    def __exit__(self, *exc: object) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_stack(
    lanes: int,
    partitions: int,
    events: int,
    *,
    http: bool,
    batch_size: int = 0,
    tenants: int = 8,
    chunk: int = CHUNK,
    script_actors: int = 0,
    rule_actors: int = 0,
    mix: str = "sample",
) -> dict[str, Any]:
    import ray

    data = Path(tempfile.mkdtemp(prefix="eventray-bench-"))
    settings = _settings(data, partitions=partitions, lanes=lanes, batch_size=batch_size,
                         script_actors=script_actors, rule_actors=rule_actors)  # fmt: skip
    result: dict[str, Any] = {
        "script_actors": script_actors,
        "rule_actors": rule_actors,
        "mix": mix,
        "lanes": lanes,
        "partitions": partitions,
        "events": events,
        "batch_size": settings.pipeline.batch_size,
        "tenants": tenants,
    }
    with _Sinks() as sinks:
        documents = _documents(sinks, tenants, mix)
        catalog = _catalog(documents)
        # Each tenant's ops webhook renders its organization's OPS_TOKEN, as in the demo.
        write_secrets_file(settings.secrets_path, sample_secrets(documents, "bench-token"))
        stack = Stack(settings)
        try:
            stack.start()
            stack.wait_revision(stack.apply(documents))
            assert stack.endpoints is not None
            url = stack.endpoints.nats_url
            asyncio.run(_publish(url, settings, _messages(catalog, settings, 500, seed=1)))
            _wait(lambda: _stored(stack), 500)  # warm: templates compiled, connections open
            time.sleep(1.0)
            result["rss_idle_mb"] = _rss()
            # Drain: a backlog published while the lanes are paused, then timed to the end.
            ray.get([lane.pause.remote() for lane in stack.lanes()])
            ray.get([lane.reset_stats.remote() for lane in stack.lanes()])
            asyncio.run(_publish(url, settings, _messages(catalog, settings, events, seed=2)))
            cpu_before = _cpu()
            ray.get([lane.resume.remote() for lane in stack.lanes()])
            progress: list[Any] = []
            elapsed = _wait(lambda: _stored(stack), events, trace=progress)
            cpu = _cpu_delta(cpu_before, _cpu())
            result["drain_progress"] = progress[::5]
            result["drain_events_per_s"] = round(events / elapsed)
            result["cpu_s"] = cpu
            result["cpu_us_per_event"] = round(sum(cpu.values()) / events * 1e6)
            result["cpu_us_per_event_pipeline"] = _pipeline_us(cpu, events, bench_process=True)
            result["cpu_us_per_event_by_process"] = {
                k: round(v / events * 1e6, 1) for k, v in cpu.items()
            }
            status = stack.status()
            result["stage_s"] = {
                k: round(sum(lane["stage_s"].get(k, 0.0) for lane in status["lanes"]), 3)
                for k in status["lanes"][0]["stage_s"]
            }
            result["store"] = status["store"]
            # Events that went to the DLQ instead (the workload is clean: a bad_ratio of 0)
            result["failed_events"] = sum(lane["failed"] for lane in status["lanes"])
            drained = [sum(lane["events_by_partition"].values()) for lane in status["lanes"]]
            result["lane_share"] = [round(n / max(sum(drained), 1), 3) for n in drained]
            if http:
                _settle(stack, sinks)
                base = _stored(stack)
                started = time.perf_counter()
                traffic = post_traffic(
                    stack.ingress_url, catalog, events=events, concurrency=16, chunk=chunk, seed=3
                )
                accepted = traffic.answers.get(201, 0)
                _wait(lambda: _stored(stack), base + accepted)
                result["http_events_per_s"] = round(accepted / (time.perf_counter() - started))
                result["http_answers"] = dict(traffic.answers)
                ingress = stack.status()["ingress"]
                result["http_shed"] = ingress.get("shed", {})  # 429s the client retried
                result["http_ingress_answers"] = ingress.get("answers", {})
                # Latency at 70% of what the HTTP path sustains.
                _settle(stack, sinks)
                rate = 0.7 * result["http_events_per_s"]
                ray.get([lane.reset_stats.remote() for lane in stack.lanes()])
                base = _stored(stack)
                paced = post_traffic(
                    stack.ingress_url, catalog, events=int(rate * 15), rate=rate,
                    concurrency=16, chunk=chunk, seed=4,
                )  # fmt: skip
                _wait(lambda: _stored(stack), base + paced.answers.get(201, 0))
                lanes_status = stack.status()["lanes"]
                result["latency_rate"] = round(rate)
                result["latency_p50_ms"] = round(
                    max(lane["latency_p50_ms"] for lane in lanes_status), 1
                )
                result["latency_p99_ms"] = round(
                    max(lane["latency_p99_ms"] for lane in lanes_status), 1
                )
            result["rss_loaded_mb"] = _rss()
            result["deliveries"] = sinks.counts()
        finally:
            stack.stop()
    return result


# ---------------------------------------------------------------------- the baseline
def run_baseline(events: int, partitions: int, tenants: int = 8) -> dict[str, Any]:
    """One plain process doing the same work: the same Lane and BatchPipeline over the same
    kinds of servers, QuickJS in this thread, chDB in this process, triggers delivered here."""
    return asyncio.run(_baseline(events, partitions, tenants))


async def _baseline(events: int, partitions: int, tenants: int) -> dict[str, Any]:
    from eventray.cluster.services.nats_server import start_nats
    from eventray.cluster.services.redis_server import start_redis
    from eventray.cluster.wiring import Endpoints, Wiring
    from eventray.pipeline.batch import BatchPipeline
    from eventray.pipeline.catalog import catalog_from_store
    from eventray.pipeline.clock import SystemClock
    from eventray.pipeline.lane import Lane
    from eventray.pipeline.rules.stage import LocalRules
    from eventray.pipeline.scripts.cache import ScriptCache
    from eventray.pipeline.scripts.executor import TemplateExecutor
    from eventray.pipeline.secrets import DictSecrets
    from eventray.pipeline.storage.rows import RowContext
    from eventray.pipeline.storage.sink import StoreSink
    from eventray.pipeline.triggers.delivery import Deliverer
    from eventray.pipeline.triggers.dispatcher import TriggerDispatcher

    data = Path(tempfile.mkdtemp(prefix="eventray-baseline-"))
    settings = _settings(data, partitions=partitions, lanes=1)
    with (
        start_nats(store_dir=data / "nats") as nats,
        start_redis(data_dir=data / "redis", persist=True) as redis,
        _Sinks() as sinks,
    ):
        wiring = Wiring(
            settings,
            Endpoints(nats.url, redis.url, data / "chdb", None, data / "config", None, None),
        )
        config = wiring.config_store()
        documents = _documents(sinks, tenants)
        config.put(documents)
        catalog, _ = catalog_from_store(config)
        store = wiring.event_store()
        store.ensure_schema()
        stream = wiring.stream()
        await stream.connect()
        await stream.ensure_stream(storage="file", extra_subjects=(settings.nats.trigger_subject,))
        state = wiring.state_store()
        pipeline = BatchPipeline(
            catalog=catalog,
            executor=TemplateExecutor(ScriptCache()),
            rules=LocalRules(
                partitions=range(partitions), store=state, clock=SystemClock(), catalog=catalog
            ),
            sink=StoreSink(store),
            outbox=stream.outbox(),
            clock=SystemClock(),
            trigger_subject=settings.nats.trigger_subject,
        )
        sources = {p: await stream.source(p) for p in range(partitions)}
        lane = Lane(pipeline, sources, batch_size=settings.pipeline.batch_size,
                    linger_s=settings.pipeline.linger_s)  # fmt: skip
        queue = await stream.queue(
            "triggers", settings.nats.trigger_subject, ack_wait_s=300, max_pending=256
        )
        sender = wiring.sender()
        dispatcher = TriggerDispatcher(
            queue=queue,
            deliverer=Deliverer(
                catalog.triggers,
                sender,
                secrets=DictSecrets(sample_secrets(documents, "bench-token")),
                lineage=catalog.lineage,
            ),
            sink=StoreSink(store),
            rows=RowContext.from_catalog(catalog, settings.store.retention()),
        )
        await _publish(nats.url, settings, _messages(catalog, settings, 500, seed=1))
        await lane.run_until(500)  # warm
        lane.reset_stats()
        await _publish(nats.url, settings, _messages(catalog, settings, events, seed=2))
        dispatcher.start()
        cpu_before = _cpu()
        started = time.perf_counter()
        await lane.run_until(events, timeout_s=900)
        elapsed = time.perf_counter() - started
        cpu = _cpu_delta(cpu_before, _cpu())
        failed = lane.stats.failed
        await dispatcher.stop()
        await sender.close()  # type: ignore[attr-defined]
        rss = _rss()
        await stream.close()
        store.close()
        state.close()  # type: ignore[attr-defined]
    return {
        "drain_events_per_s": round(events / elapsed),
        "cpu_s": cpu,
        "cpu_us_per_event": round(sum(cpu.values()) / events * 1e6),
        "cpu_us_per_event_pipeline": _pipeline_us(cpu, events, bench_process=False),
        "rss_mb": rss,
        "failed_events": failed,
    }


# ---------------------------------------------------------------------- report
def _table(baseline: dict[str, Any], stacks: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | drain events/s (no HTTP) | via HTTP | p50 / p99 ms at 70% of HTTP "
        "| CPU us/event: pipeline (all processes) | RSS MB idle / loaded, all processes "
        "| lanes' share of the drain |",
        "|---|---|---|---|---|---|---|",
        f"| baseline: 1 process, no Ray | {baseline['drain_events_per_s']:,} | - | - | "
        f"{baseline.get('cpu_us_per_event_pipeline', 0)} ({baseline['cpu_us_per_event']}) | "
        f"{sum(baseline['rss_mb'].values()):,.0f} | - |",
    ]
    for r in stacks:
        http = f"{r['http_events_per_s']:,}" if "http_events_per_s" in r else "-"
        lat = (
            f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} at {r['latency_rate']:,}/s"
            if "latency_p50_ms" in r
            else "-"
        )
        lines.append(
            f"| Ray, {r['lanes']} lane(s), {r['partitions']} partitions{_shape(r)} | "
            f"{r['drain_events_per_s']:,} | {http} | {lat} | "
            f"{r['cpu_us_per_event_pipeline']} ({r['cpu_us_per_event']}) | "
            f"{sum(r['rss_idle_mb'].values()):,.0f} / {sum(r['rss_loaded_mb'].values()):,.0f} | "
            f"{' / '.join(f'{share:.0%}' for share in r.get('lane_share', []))} |"
        )
    return "\n".join(lines)


def _shape(r: dict[str, Any]) -> str:
    """The per-stage part of a configuration's name ("" for the default shape)."""
    parts = []
    if r.get("script_actors"):
        parts.append(f"{r['script_actors']} script actors")
    if r.get("rule_actors"):
        parts.append(f"{r['rule_actors']} rule actors")
    if r.get("mix", "sample") != "sample":
        parts.append(f"{r['mix']} mix")
    return (", " + ", ".join(parts)) if parts else ""


def _run_one(what: str, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in a fresh process, so no run carries another's memory (the
    baseline loads chDB into its own process) and every driver is measured alike."""
    command = [sys.executable, "-m", "benchmarks.bench_e2e", "--one", what,
               "--events", str(args.events), "--partitions", str(args.partitions),
               "--tenants", str(args.tenants)]  # fmt: skip
    if args.no_http:
        command.append("--no-http")
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    command += ["--chunk", str(args.chunk), "--mix", args.mix,
                "--script-actors", str(args.script_actors),
                "--rule-actors", str(args.rule_actors)]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True)
    line = done.stdout.decode().strip().splitlines()[-1]
    result: dict[str, Any] = orjson.loads(line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--lanes", default="1,2", help="lane counts to run, e.g. 1,2")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-http", action="store_true", help="drain only")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--tenants", type=int, default=8, help="copies of the sample customer (1: as shipped)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="events per batch (default: the setting)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=CHUNK,
        help="uplinks the traffic generator takes per tick, posted as one request per data source",
    )
    parser.add_argument(
        "--script-actors", type=int, default=0, help="pipeline.script_actors (0: in the lanes)"
    )
    parser.add_argument(
        "--rule-actors", type=int, default=0, help="pipeline.rule_actors (0: in the lanes)"
    )
    parser.add_argument("--mix", choices=MIXES, default="sample", help="the tenant mix")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # baseline | lanes:N
    args = parser.parse_args()
    if args.one is not None:  # a child run: one JSON line on stdout
        if args.one == "baseline":
            result = run_baseline(args.events, args.partitions, args.tenants)
        else:
            result = run_stack(
                int(args.one.split(":")[1]),
                args.partitions,
                args.events,
                http=not args.no_http,
                batch_size=args.batch_size,
                tenants=args.tenants,
                chunk=args.chunk,
                script_actors=args.script_actors,
                rule_actors=args.rule_actors,
                mix=args.mix,
            )
        print(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
        return
    started = datetime.now(UTC)
    baseline = (
        {"drain_events_per_s": 0, "cpu_us_per_event": 0, "rss_mb": {}, "cpu_s": {}}
        if args.no_baseline
        else _run_one("baseline", args)
    )
    print("baseline:", orjson.dumps(baseline).decode(), flush=True)
    stacks = []
    for lanes in [int(x) for x in args.lanes.split(",")]:
        result = _run_one(f"lanes:{lanes}", args)
        print(f"ray, {lanes} lane(s):", orjson.dumps(result).decode(), flush=True)
        stacks.append(result)
    print()
    print(_table(baseline, stacks))
    by_lanes = {r["lanes"]: r["drain_events_per_s"] for r in stacks}
    if 1 in by_lanes and 2 in by_lanes:
        print(
            f"\nscaling 1 -> 2 lanes: x{by_lanes[2] / by_lanes[1]:.2f} "
            f"(efficiency {by_lanes[2] / (2 * by_lanes[1]):.0%}); best Ray drain vs baseline: "
            f"x{max(by_lanes.values()) / max(1, baseline['drain_events_per_s']):.2f}"
        )
    for r in stacks:
        print(
            f"\nRay, {r['lanes']} lane(s): CPU us/event by process: {r['cpu_us_per_event_by_process']}"
        )
        print(f"  stage seconds (summed over lanes): {r['stage_s']}; store: {r['store']}")
        print(f"  RSS MB idle: {r['rss_idle_mb']}")
        print(f"  RSS MB loaded: {r['rss_loaded_mb']}")
        print(f"  deliveries to the sinks: {r.get('deliveries')}")
        print(f"  events failed (DLQ) in the drain: {r.get('failed_events')}")
    print(f"\nbaseline CPU s by process: {baseline['cpu_s']}; RSS MB: {baseline['rss_mb']}; "
          f"events failed (DLQ): {baseline.get('failed_events')}")  # fmt: skip
    out = args.json or Path(".eventray") / "bench" / f"bench_e2e-{started:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        orjson.dumps(
            {"started": started.isoformat(), "baseline": baseline, "stacks": stacks},
            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
        )
    )
    print(f"\nfigures written to {out}")


if __name__ == "__main__":
    main()
