"""``eventray demo --local``: the sample tenant and simulated devices through the pipeline, in
one process (no Ray, no servers).

It runs the same :class:`~eventray.pipeline.lane.Lane` and
:class:`~eventray.pipeline.batch.BatchPipeline` a lane actor runs, over the in-memory twins of
the stream, the store and the rule state: bind each uplink to its asset, decode/validate/
transform it in QuickJS (including the unmodified EM300-TH and WS301 codecs), route it,
evaluate the business rules, build every stored row and queue the trigger deliveries. It prints
throughput as it goes and a summary read back from what was stored and queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from eventray.cluster.progress import Progress
from eventray.cluster.table import write_table
from eventray.config.settings import Settings
from eventray.pipeline.adapters.localdir import LocalDirBlobStore
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.batch import BatchPipeline
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.ingress import new_tracker_id
from eventray.pipeline.lane import Lane
from eventray.pipeline.partitioning import partition_of
from eventray.pipeline.processor import Ingested
from eventray.pipeline.rules.stage import LocalRules
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.storage.rows import as_dicts
from eventray.pipeline.storage.sink import MemoryRowSink
from eventray.pipeline.triggers.delivery import DeliveryGroup
from eventray.testing.simulator import DeviceSimulator

__all__ = ["DemoSummary", "run_local_demo"]

SAMPLE_TENANT = Path(__file__).resolve().parent.parent / "config" / "samples" / "tenant"


@dataclass
class DemoSummary:
    ingested: int = 0
    processed: int = 0
    seconds: float = 0.0
    by_org_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    rules_fired: Counter[str] = field(default_factory=Counter)
    triggers: Counter[str] = field(default_factory=Counter)
    captures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


def run_local_demo(
    settings: Settings, *, events: int, batch: int, out: TextIO, config: Path | None = None
) -> DemoSummary:
    return asyncio.run(_run(settings, events=events, batch=batch, out=out, config=config))


async def _run(
    settings: Settings, *, events: int, batch: int, out: TextIO, config: Path | None
) -> DemoSummary:
    catalog = load_catalog([config or settings.config_dir or SAMPLE_TENANT])
    simulator = DeviceSimulator(catalog)
    clock = ManualClock(simulator.now)  # rules see simulated time, so cooldowns behave
    partitions = settings.pipeline.partitions
    stream, sink = MemoryStream(), MemoryRowSink()
    cache = ScriptCache(
        capacity=settings.scripts.cache_capacity, l1=LocalDirBlobStore(settings.script_cache_dir),
        limits=settings.scripts.limits(),
    )  # fmt: skip
    pipeline = BatchPipeline(
        catalog=catalog,
        executor=TemplateExecutor(cache),
        rules=LocalRules(
            partitions=range(partitions), store=MemoryStateStore(), clock=clock, catalog=catalog
        ),
        sink=sink,
        outbox=stream.outbox(),
        clock=clock,
        retention=settings.store.retention(),
        log_detail=settings.store.log_detail,
        trigger_subject=settings.nats.trigger_subject,
    )
    lane = Lane(
        pipeline,
        {p: await stream.source(p) for p in range(partitions)},
        batch_size=batch,
        linger_s=0.001,
        fetch_timeout_s=0.05,
    )
    out.write(f"eventray demo (local): {len(catalog.assets)} assets, {len(catalog.business_rules)} "
              f"business rules, {events} events in batches of {batch}, one process\n")  # fmt: skip
    started = time.perf_counter()
    progress = Progress(out, total=events)
    ingested = 0
    while ingested < events:
        uplinks = simulator.take(min(batch, events - ingested))
        received_ms = int(simulator.now.timestamp() * 1000)
        for uplink in uplinks:
            org = catalog.data_sources[uplink.data_source_id].org_id
            stream.add(
                partition_of(org, partitions),
                [Ingested(new_tracker_id(), uplink.data_source_id, uplink.body, received_ms)],
            )
        clock.set(simulator.now)
        await lane.run_until(ingested + len(uplinks))
        ingested += len(uplinks)
        progress.update(sent=ingested, stored=lane.stats.events, failed=lane.stats.failed)
    progress.done(sent=ingested, stored=lane.stats.events, failed=lane.stats.failed)
    summary = _summary(sink, stream, lane)
    summary.ingested = ingested
    summary.seconds = time.perf_counter() - started
    _print_summary(summary, out)
    return summary


def _summary(sink: MemoryRowSink, stream: MemoryStream, lane: Lane) -> DemoSummary:
    """What the run stored and queued, read back as a user would."""
    summary = DemoSummary(processed=lane.stats.events)
    rows = as_dicts(sink.rows)
    for row in rows["events"]:
        summary.by_org_type[(row["org_id"], row["event_type"])] += 1
    for row in rows["dlq"]:
        summary.failures[f"{row['stage']}: {row['error']}"] += 1
    for row in rows["logs_rule"]:
        if row["actions"]:
            summary.rules_fired[row["business_rule_id"]] += 1
    for row in rows["logs_capture"]:
        summary.captures[row["name"] or row["action_id"]] += 1
    for message in stream.outbox().queued.values():
        for job in DeliveryGroup.from_bytes(message.body).jobs:
            summary.triggers[job.trigger_id] += 1
            if len(summary.examples) < 5 and job.message:
                summary.examples.append(f"{job.trigger_id}: {job.message}")
    return summary


def _print_summary(summary: DemoSummary, out: TextIO) -> None:
    rate = summary.ingested / summary.seconds if summary.seconds else 0.0
    out.write(f"\n{summary.ingested} events in {summary.seconds:.2f} s ({rate:,.0f} events/s, one "
              f"process); {summary.processed} processed, "
              f"{summary.ingested - summary.processed} sent to the DLQ\n")  # fmt: skip
    out.write("\nevents per organization and type:\n")
    rows = [(org, kind, count) for (org, kind), count in sorted(summary.by_org_type.items())]
    write_table(out, ("organization", "type", "events"), rows, indent="  ")
    for title, header, counts in (
        ("business rules that ran actions", "business rule", summary.rules_fired),
        ("exec actions per trigger (would be delivered)", "trigger", summary.triggers),
        ("capture records", "capture", summary.captures),
    ):
        out.write(f"\n{title}:\n")
        write_table(out, (header, "count"), counts.most_common(), indent="  ")
    if summary.failures:
        out.write("\nDLQ reasons:\n")
        reasons = [(count, reason) for reason, count in summary.failures.most_common()]
        write_table(out, ("count", "stage: reason"), reasons, indent="  ")
    if summary.examples:
        out.write("\nexample messages:\n")
        for line in summary.examples:
            out.write(f"  {line}\n")
