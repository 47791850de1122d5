"""The head of a batch, in one process: bind -> scripts -> route -> EVA, and the rule inputs.

This is the first half of what :class:`eventray.pipeline.batch.BatchPipeline` does for each
batch pulled from the stream; it is also what ``eventray demo --local``, the benchmarks and
test mode run, so every path uses the same code.

Nothing is dropped: an event that fails at any stage becomes a :class:`Failure` naming the
stage and the error, with its original body, for the DLQ and ``logs_script``. Every per-event
step runs under its own ``try``, so one event can fail only itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.eva import EvaValues, extract_eva
from eventray.pipeline.models import Asset, AssetTemplate
from eventray.pipeline.replay_marks import ReplayMark
from eventray.pipeline.routing import RouteTable, RoutingResult
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput
from eventray.pipeline.scripts.executor import ScriptExecutor, ScriptJob

__all__ = ["EventProcessor", "Failure", "Ingested", "ProcessedBatch", "ProcessedEvent"]


@dataclass(frozen=True, slots=True)
class Ingested:
    """An accepted ingestion as the stream delivers it.

    Args:
        event_tracker_id: minted once at the ingress, carried to every row.
        data_source_id: the data source it came through.
        body: the raw body (JSON for HTTP; any bytes for a codec).
        received_ms: when the ingress accepted it (epoch milliseconds).
        seq: its stream sequence (the rule state's fence), None outside a stream.
        asset_id: the asset the ingress bound it to, or "" (a hint: the lane checks it against
            its own catalog, and binds from the body when it is absent).
        delivered: how many times the stream has delivered it (1 the first time).
        ack: the source's acknowledgement handle (JetStream's reply subject).
        revision: the config revision the ingress accepted it under (0: unknown); the lane
            runs at least that revision's catalog for it.
        replay: set on a replay's copy of an event processed before, or on a replay's reset
            marker (see :mod:`eventray.pipeline.replay_marks`); None for everything else.
        copy: a redriven or replayed copy: ``received_ms`` is its event's, not its arrival's
            (the lane leaves it out of its latencies).
    """

    event_tracker_id: str
    data_source_id: str
    body: bytes
    received_ms: int
    seq: int | None = None
    asset_id: str = ""
    delivered: int = 1
    ack: str = ""
    revision: int = 0
    replay: ReplayMark | None = None
    copy: bool = False


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

    def subset(self, tracker_ids: Iterable[str], *, with_rules: bool = False) -> ProcessedBatch:
        """The part of this batch that belongs to ``tracker_ids``; its rule outcome too when
        ``with_rules`` (else empty: the tail evaluates the subset's rules again)."""
        keep = set(tracker_ids)
        rules = BatchOutcome()
        if with_rules:
            rules.evaluations = [e for e in self.rules.evaluations if e.event_tracker_id in keep]
        return ProcessedBatch(
            [e for e in self.events if e.event_tracker_id in keep],
            [f for f in self.failures if f.event_tracker_id in keep],
            rules,
            [r for r in self.rule_inputs if r.event_tracker_id in keep],
        )


def failed(item: Ingested, stage: str, error: str, org_id: str = "", asset_id: str = "") -> Failure:
    """The failure of ``item`` at ``stage``."""
    return Failure(item.event_tracker_id, stage, error, item.body, org_id, asset_id, None, item.seq)


class EventProcessor:
    """Processes batches against one catalog snapshot.

    Args:
        catalog: the entities (replace the processor when the catalog changes).
        executor: the script executor (its cache stays warm across catalogs).
        rules: the rule engine, or None to stop after routing (the pipeline evaluates rules
            in its tail, per partition).
    """

    def __init__(
        self, catalog: Catalog, executor: ScriptExecutor, rules: RuleEngine | None
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
            try:
                found = self._bind(item, out)
            except Exception as exc:  # a bug must cost this event, not the batch
                out.failures.append(failed(item, "bind", f"{type(exc).__name__}: {exc}"))
                continue
            if found is not None:
                bound.append((item, *found))
                jobs.append(ScriptJob(found[1], item.body))
        results = self.executor.run(jobs)
        if len(results) != len(jobs):  # the executor's contract; never zip short
            raise RuntimeError(f"script executor returned {len(results)} results for {len(jobs)}")
        for (item, asset, template), result in zip(bound, results, strict=True):
            try:
                self._finish(item, asset, template, result, out)
            except Exception as exc:
                out.failures.append(
                    failed(item, "route", f"{type(exc).__name__}: {exc}", asset.org_id, asset.id)
                )
        if self.rules is not None and out.rule_inputs:
            out.rules = self.rules.evaluate(out.rule_inputs, partition=partition)
        return out

    def _finish(
        self,
        item: Ingested,
        asset: Asset,
        template: AssetTemplate,
        result: Any,
        out: ProcessedBatch,
    ) -> None:
        org = self.catalog.orgs[asset.org_id]
        error = result.get("e") if isinstance(result, dict) else {"message": "no result"}
        if error is not None or "r" not in result:
            error = error if isinstance(error, dict) else {"message": str(error)}
            line = error.get("line")
            out.failures.append(
                Failure(
                    item.event_tracker_id,
                    str(error.get("stage", "script")),
                    str(error.get("message", "")),
                    item.body,
                    asset.org_id,
                    asset.id,
                    line if isinstance(line, int) else None,
                    item.seq,
                )
            )
            return
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
            out.rule_inputs.append(
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

    def _bind(self, item: Ingested, out: ProcessedBatch) -> tuple[Asset, AssetTemplate] | None:
        def fail(reason: str, org_id: str = "", asset_id: str = "") -> None:
            out.failures.append(failed(item, "bind", reason, org_id, asset_id))

        source = self.catalog.data_sources.get(item.data_source_id)
        if source is None:
            fail(f"unknown data source {item.data_source_id!r}")
            return None
        asset: Asset | str | None = None
        if item.asset_id:
            # The ingress bound it already (and parsed the body to do so): trust the binding
            # only as far as this catalog agrees, and never across tenants.
            hinted = self.catalog.assets.get(item.asset_id)
            if hinted is not None and self.catalog.is_ancestor_or_self(
                source.org_id, hinted.org_id
            ):
                asset = hinted
        if asset is None:
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
