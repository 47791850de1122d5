"""The benchmark's multi-tenant workload: the sample customer copied n times, and simulated
traffic for every copy that the real processor (QuickJS templates and codecs, routing, rules)
accepts as cleanly as the sample's own. A copy whose uplinks failed would measure the DLQ,
not the pipeline (the first 8-tenant benchmark runs did: copied LoRaWAN devices posted freezer
JSON to the HTTP gateway, because the simulator recognised templates by the sample's ids)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from eventray.cluster.stack_cli import read_entity_documents
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.catalog import build_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.processor import EventProcessor, Ingested
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.tenants import copy_tenants, original_id

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


def test_original_id_strips_only_the_copy_suffix() -> None:
    assert original_id("em300-th-t12") == "em300-th"
    assert original_id("em300-th") == "em300-th"
    assert original_id("ds-ttn-webhook") == "ds-ttn-webhook"


def test_every_copied_tenant_s_traffic_is_processed_without_failures() -> None:
    documents = copy_tenants(read_entity_documents([TENANT]), 3)
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("copies", d, issues) for d in documents]
    assert issues == []
    catalog = build_catalog([("copies", e) for e in entities if e is not None])
    simulator = DeviceSimulator(catalog, bad_ratio=0.0)
    received = int(datetime(2026, 3, 1, 6, tzinfo=UTC).timestamp() * 1000)
    items = [
        Ingested(f"u{n}", uplink.data_source_id, uplink.body, received, n + 1)
        for n, uplink in enumerate(simulator.take(len(simulator.assets) * 3))
    ]
    processor = EventProcessor(
        catalog,
        TemplateExecutor(ScriptCache()),
        RuleEngine(catalog.rule_set(), MemoryStateStore(), clock=ManualClock(datetime.now(UTC))),
    )
    batch = processor.process(items)
    assert [(f.stage, f.error) for f in batch.failures] == []
    # every copy of every template produced events, in its own organizations
    per_copy = Counter(e.template.id for e in batch.events)
    templates = {original_id(t) for t in per_copy}
    assert {f"{t}-t{n}" for t in templates for n in (1, 2, 3)} == set(per_copy)
    assert {"em300-th", "ws301-door"} <= templates
    assert all(e.org_id.endswith(e.template.id[-3:]) for e in batch.events)
