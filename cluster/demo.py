"""``eventray demo --local``: the sample tenant and simulated devices through the engine core,
in one process (no Ray, no servers).

It runs the same :class:`EventProcessor` a pipeline lane runs: bind each uplink to its asset,
decode/validate/transform it in QuickJS (including the unmodified EM300-TH and WS301 codecs),
route it, and evaluate the business rules against in-memory state. It prints throughput as it
goes and a summary at the end.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from eventray.config.settings import Settings
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.processor import EventProcessor, Ingested
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
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
    catalog = load_catalog([config or settings.config_dir or SAMPLE_TENANT])
    simulator = DeviceSimulator(catalog)
    clock = ManualClock(simulator.now)  # rules see simulated time, so cooldowns behave
    cache = ScriptCache(
        capacity=settings.scripts.cache_capacity, l1_dir=settings.script_cache_dir,
        limits=settings.scripts.limits(),
    )  # fmt: skip
    store = MemoryStateStore()
    processor = EventProcessor(
        catalog, TemplateExecutor(cache), RuleEngine(catalog.rule_set(), store, clock=clock)
    )
    summary = DemoSummary()
    out.write(f"eventray demo (local): {len(catalog.assets)} assets, {len(catalog.business_rules)} "
              f"business rules, {events} events in batches of {batch}\n")  # fmt: skip
    started = time.perf_counter()
    seq = 0
    while summary.ingested < events:
        uplinks = simulator.take(min(batch, events - summary.ingested))
        items = []
        for uplink in uplinks:
            seq += 1
            items.append(Ingested(str(uuid.uuid4()), uplink.data_source_id, uplink.body,
                                  simulator.now.isoformat(), seq))  # fmt: skip
        clock.set(simulator.now)
        t0 = time.perf_counter()
        result = processor.process(items)
        dt = time.perf_counter() - t0
        summary.ingested += len(items)
        summary.processed += len(result.events)
        for event in result.events:
            summary.by_org_type[(event.org_id, str(event.event.get("eventType")))] += 1
        for failure in result.failures:
            summary.failures[f"{failure.stage}: {failure.error}"] += 1
        for evaluation in result.rules.evaluations:
            if evaluation.actions:
                summary.rules_fired[evaluation.business_rule_id] += 1
            for intent in evaluation.execs:
                summary.triggers[intent.trigger_id] += 1
                if len(summary.examples) < 5 and intent.message:
                    summary.examples.append(f"{intent.trigger_id}: {intent.message}")
            for capture in evaluation.captures:
                summary.captures[capture.name or capture.action_id] += 1
        out.write(f"  batch of {len(items):>5}: {len(result.events):>5} processed, "
                  f"{len(result.failures):>3} to DLQ, {len(items) / dt:>9,.0f} events/s\n")  # fmt: skip
    summary.seconds = time.perf_counter() - started
    _print_summary(summary, out)
    return summary


def _print_summary(summary: DemoSummary, out: TextIO) -> None:
    rate = summary.ingested / summary.seconds if summary.seconds else 0.0
    out.write(f"\n{summary.ingested} events in {summary.seconds:.2f} s ({rate:,.0f} events/s, one "
              f"process); {summary.processed} processed, "
              f"{summary.ingested - summary.processed} sent to the DLQ\n")  # fmt: skip
    out.write("\nevents per organization and type:\n")
    for (org, kind), count in sorted(summary.by_org_type.items()):
        out.write(f"  {org:<22} {kind:<12} {count:>7}\n")
    out.write("\nbusiness rules that ran actions:\n")
    for name, count in summary.rules_fired.most_common():
        out.write(f"  {name:<28} {count:>7}\n")
    out.write("\nexec actions per trigger (would be delivered):\n")
    for name, count in summary.triggers.most_common():
        out.write(f"  {name:<28} {count:>7}\n")
    out.write("\ncapture records:\n")
    for name, count in summary.captures.most_common():
        out.write(f"  {name:<28} {count:>7}\n")
    if summary.failures:
        out.write("\nDLQ reasons:\n")
        for reason, count in summary.failures.most_common():
            out.write(f"  {count:>5} x {reason}\n")
    if summary.examples:
        out.write("\nexample messages:\n")
        for line in summary.examples:
            out.write(f"  {line}\n")
