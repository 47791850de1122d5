"""One partition's batch, end to end, in one process: bind -> scripts -> route -> rules.

This is the work a pipeline lane does for each batch pulled from the stream; the Ray actors
only move batches to it and its results onward. It is also what ``eventray demo --local``, the
benchmarks and test mode run, so every path uses the same code.

Nothing is dropped: an event that fails at any stage becomes a :class:`Failure` naming the
stage and the error, with its original body, for the DLQ and ``logs_script``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.eva import EvaValues, extract_eva
from eventray.pipeline.models import Asset, AssetTemplate
from eventray.pipeline.routing import RouteTable, RoutingResult
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor

__all__ = ["EventProcessor", "Failure", "Ingested", "ProcessedBatch", "ProcessedEvent"]


@dataclass(frozen=True, slots=True)
class Ingested:
    """An accepted ingestion, as the ingress publishes it to the stream."""

    event_tracker_id: str
    data_source_id: str
    body: bytes
    received_at: str
    seq: int | None = None


@dataclass(slots=True)
class ProcessedEvent:
    event_tracker_id: str
    asset: Asset
    template: AssetTemplate
    org_id: str
    path_key: str
    event: dict[str, Any]
    routing: RoutingResult
    eva: EvaValues
    body: bytes
    seq: int | None = None
    view: dict[str, Any] = field(default_factory=dict)  # event + metadata.assetId + orgId


@dataclass(frozen=True, slots=True)
class Failure:
    """An event that could not be processed: where, why, and the original message."""

    event_tracker_id: str
    stage: str
    error: str
    body: bytes
    org_id: str = ""
    asset_id: str = ""
    line: int | None = None
    seq: int | None = None


@dataclass(slots=True)
class ProcessedBatch:
    events: list[ProcessedEvent] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    rules: BatchOutcome = field(default_factory=BatchOutcome)
    rule_inputs: list[RuleInput] = field(default_factory=list)


class EventProcessor:
    """Processes batches against one catalog snapshot.

    Args:
        catalog: the entities (replace the processor when the catalog changes).
        executor: the script executor (its cache stays warm across catalogs).
        rules: the rule engine, or None to stop after routing.
    """

    def __init__(
        self, catalog: Catalog, executor: TemplateExecutor, rules: RuleEngine | None
    ) -> None:
        self.catalog = catalog
        self.executor = executor
        self.rules = rules
        self.routes: RouteTable = catalog.route_table()
        self._binder = AssetBinder(catalog)

    def process(self, batch: Sequence[Ingested], *, partition: str = "p0") -> ProcessedBatch:
        out = ProcessedBatch()
        jobs: list[ScriptJob] = []
        bound: list[tuple[Ingested, Asset, AssetTemplate]] = []
        for item in batch:
            found = self._bind(item, out)
            if found is not None:
                bound.append((item, *found))
                jobs.append(ScriptJob(found[1], item.body))
        results = self.executor.run(jobs)
        rule_inputs = out.rule_inputs
        for (item, asset, template), result in zip(bound, results, strict=True):
            org = self.catalog.orgs[asset.org_id]
            if "e" in result:
                error = result["e"]
                out.failures.append(
                    Failure(
                        item.event_tracker_id,
                        str(error.get("stage", "script")),
                        str(error.get("message", "")),
                        item.body,
                        asset.org_id,
                        asset.id,
                        error.get("line"),
                        item.seq,
                    )
                )
                continue
            event: dict[str, Any] = result["r"]
            metadata = event.get("metadata")
            view = {
                **event,
                "metadata": {**(metadata or {}), "assetId": asset.id},
                "orgId": asset.org_id,
            }
            routing = self.routes.route(view, asset.route_group_ids)
            out.events.append(
                ProcessedEvent(
                    item.event_tracker_id,
                    asset,
                    template,
                    asset.org_id,
                    org.path_key,
                    event,
                    routing,
                    extract_eva(template.dynamic_fields, event),
                    item.body,
                    item.seq,
                    view,
                )
            )
            if routing.has("rules"):
                rule_inputs.append(
                    RuleInput(
                        item.event_tracker_id,
                        asset.org_id,
                        org.path_key,
                        asset.id,
                        template.id,
                        view,
                        tuple(asset.tags),
                        item.seq,
                    )
                )
        if self.rules is not None and rule_inputs:
            out.rules = self.rules.evaluate(rule_inputs, partition=partition)
        return out

    def _bind(self, item: Ingested, out: ProcessedBatch) -> tuple[Asset, AssetTemplate] | None:
        def fail(reason: str, org_id: str = "", asset_id: str = "") -> None:
            out.failures.append(
                Failure(
                    item.event_tracker_id,
                    "bind",
                    reason,
                    item.body,
                    org_id,
                    asset_id,
                    None,
                    item.seq,
                )
            )

        source = self.catalog.data_sources.get(item.data_source_id)
        if source is None:
            fail(f"unknown data source {item.data_source_id!r}")
            return None
        try:
            body = orjson.loads(item.body)
        except orjson.JSONDecodeError as exc:
            fail(f"body is not JSON: {exc}", source.org_id)
            return None
        if not isinstance(body, dict):
            fail("body is not a JSON object", source.org_id)
            return None
        asset = self._binder.bind(source, body)
        if isinstance(asset, str):
            fail(asset, source.org_id)
            return None
        if not asset.enabled:
            fail(f"asset {asset.id!r} is disabled", asset.org_id, asset.id)
            return None
        template = self.catalog.templates[asset.template_id]
        if not template.enabled:
            fail(f"asset template {template.id!r} is disabled", asset.org_id, asset.id)
            return None
        return asset, template
