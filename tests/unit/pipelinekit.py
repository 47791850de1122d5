"""A small tenant and a pipeline over in-memory twins, for the lane's unit tests.

The tenant: one organization, one data source binding on ``id``, a pass-through template
(``data`` is the body), a route group that stores every event, evaluates rules, and sends
events with ``alert: true`` to a webhook trigger, and one business rule counting events per
organization. No server, no Ray: the stream, the outbox, the store and the rule state are the
twins in ``eventray.pipeline``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.batch import BatchPipeline
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigIssue, PermanentError, RetryableError
from eventray.pipeline.lane import Lane
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.processor import Ingested
from eventray.pipeline.rules.stage import LocalRules
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.storage.rows import as_dicts
from eventray.pipeline.storage.sink import MemoryRowSink

ORG = "org-a"
SOURCE = "ds-a"

DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "Organization", "id": ORG, "name": "A", "type": "customer"},
    {"kind": "DataSource", "id": SOURCE, "orgId": ORG, "name": "A", "protocol": "http",
     "auth": {"type": "none"}, "assetBind": {"uuidFields": ["device"]}},
    {"kind": "AssetTemplate", "id": "pass", "orgId": ORG, "name": "pass-through",
     "scriptConversion": "result = {eventType: 'reading', eventId: String(payload.n), "
                         "data: payload, created: '2026-03-01T08:00:00Z'};"},
    {"kind": "RouteGroup", "id": "rg", "orgId": ORG, "name": "all", "version": 1, "routers": [
        {"kind": "save_event"},
        {"kind": "rules"},
        {"kind": "trigger", "trigger": {"triggerId": "hook"},
         "match": {"policy": "all", "rules": [{"field": "data.alert", "operator": "eq",
                                               "value": True}]}},
    ]},
    {"kind": "Trigger", "id": "hook", "orgId": ORG, "name": "hook", "triggerType": "http",
     "config": {"http": {"endpoint": "http://127.0.0.1:9/hook", "method": "POST"}}},
    {"kind": "Asset", "id": "dev-1", "orgId": ORG, "assetUUID": "D1", "name": "device 1",
     "templateId": "pass", "routeGroupIds": ["rg"]},
    {"kind": "Rule", "id": "count", "orgId": ORG, "variables": [
        {"name": "seen", "type": "number", "default": 0}],
     "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "seen"}],
     "when": {"logic": "AND", "actions": ["bump"], "items": [{"type": "condition", "data": {
         "field": {"type": "event", "value": "data.n"}, "operator": "exists"}}]}},
    {"kind": "BusinessRule", "id": "count-a", "ruleId": "count", "orgId": ORG},
]  # fmt: skip

STATE_KEY = f"state:{ORG}:count-a:seen"


def catalog(extra: Sequence[dict[str, Any]] = ()) -> Catalog:
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", d, issues) for d in [*DOCUMENTS, *extra]]
    assert not issues, issues
    return build_catalog([("test", e) for e in entities if e is not None])


def body(n: int, **extra: Any) -> bytes:
    return orjson.dumps({"device": "D1", "n": n, **extra})


def ingested(n: int, raw: bytes | None = None) -> Ingested:
    return Ingested(
        f"e{n:04d}", SOURCE, raw if raw is not None else body(n), int(time.time() * 1000)
    )


class FlakySink(MemoryRowSink):
    """A row sink that refuses rows of chosen events, or everything, a set number of times.

    Args:
        poison: event tracker ids whose stored rows (``events``, ``logs_rule``) make every
            write that holds them fail with an error nobody classified (a ValueError); their
            DLQ rows store fine.
        retryable_failures: how many writes fail first with a RetryableError.
        refuse_dlq: refuse every write that holds DLQ rows (a store that refuses them).
    """

    def __init__(
        self,
        *,
        poison: Sequence[str] = (),
        retryable_failures: int = 0,
        refuse_dlq: bool = False,
    ) -> None:
        super().__init__()
        self.poison = set(poison)
        self.retryable_failures = retryable_failures
        self.refuse_dlq = refuse_dlq
        self.attempts = 0

    async def write(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        self.attempts += 1
        if self.retryable_failures:
            self.retryable_failures -= 1
            raise RetryableError("the store is restarting")
        if self.refuse_dlq and rows.get("dlq"):
            raise PermanentError("the store refuses DLQ rows")
        for table in ("events", "logs_rule"):
            for row in rows.get(table, ()):
                if row[3] in self.poison:  # event_tracker_id is the 4th column everywhere
                    raise ValueError(f"cannot store a value of {row[3]}")
        await super().write(rows)


@dataclass
class Rig:
    """A lane over one partition of an in-memory stream."""

    stream: MemoryStream
    sink: MemoryRowSink
    state: MemoryStateStore
    pipeline: BatchPipeline
    lane: Lane
    items: list[Ingested] = field(default_factory=list)

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        return as_dicts(self.sink.rows)

    def trackers(self, table: str) -> list[str]:
        return [row["event_tracker_id"] for row in self.rows()[table]]


async def rig(
    *,
    sink: MemoryRowSink | None = None,
    max_payload: int = 1024 * 1024,
    executor: TemplateExecutor | None = None,
    state: MemoryStateStore | None = None,
    stream: MemoryStream | None = None,
    documents: Sequence[dict[str, Any]] = (),
) -> Rig:
    """The lane; ``documents`` are entities added to the tenant (more rules, say)."""
    stream = stream or MemoryStream(max_payload=max_payload)
    sink = sink if sink is not None else MemoryRowSink()
    state = state or MemoryStateStore()
    clock = ManualClock()
    cat = catalog(documents)
    pipeline = BatchPipeline(
        catalog=cat,
        executor=executor or TemplateExecutor(ScriptCache()),
        rules=LocalRules(partitions=[0], store=state, clock=clock, catalog=cat),
        sink=sink,
        outbox=stream.outbox(),
        clock=clock,
    )
    lane = Lane(
        pipeline,
        {0: await stream.source(0)},
        batch_size=100,
        linger_s=0.001,
        fetch_timeout_s=0.02,
        retry_initial_s=0.001,
        retry_max_s=0.005,
    )
    return Rig(stream, sink, state, pipeline, lane)
