"""Two tenants on one partition of the in-memory stream, a lane, and the replay service over
the twins: what the redrive and replay unit tests share.

Tenant ``org-a`` is pipelinekit's (a pass-through template, a route group that stores every
event, evaluates rules and sends ``alert: true`` events to a webhook, a business rule counting
events); its sibling ``org-b`` has its own copies of them. Events are appended as the ingress
appends them (headers and all), received one second apart from :data:`BASE_MS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eventray.pipeline.adapters.memory_archive import MemoryArchive, MemoryDeadLetters
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ingress import ingested_headers
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.replay import ReplayService, Scope
from eventray.pipeline.storage.rows import as_dicts
from tests.unit import pipelinekit
from tests.unit.pipelinekit import ORG, SOURCE, Rig

BASE_MS = 1_772_352_000_000  # 2026-03-01T08:00:00Z
ORG_B = "org-b"
SOURCE_B = "ds-b"
SUBJECT = "eventray.in.p0"
TRIGGERS = "eventray.triggers"

PASS = (
    "result = {eventType: 'reading', eventId: String(payload.n), data: payload, "
    "created: '2026-03-01T08:00:00Z'};"
)
BROKEN = "if (payload.bad) { throw new Error('bad reading ' + payload.n); } " + PASS
VERSION_2 = (
    "result = {eventType: 'reading', eventId: String(payload.n), "
    "data: Object.assign({}, payload, {version: 2}), created: '2026-03-01T08:00:00Z'};"
)

TENANT_B: list[dict[str, Any]] = [
    {"kind": "Organization", "id": ORG_B, "name": "B", "type": "customer"},
    {"kind": "DataSource", "id": SOURCE_B, "orgId": ORG_B, "name": "B", "protocol": "http",
     "auth": {"type": "none"}, "assetBind": {"uuidFields": ["device"]}},
    {"kind": "AssetTemplate", "id": "pass-b", "orgId": ORG_B, "name": "pass-b",
     "scriptConversion": PASS},
    {"kind": "RouteGroup", "id": "rg-b", "orgId": ORG_B, "name": "all", "version": 1,
     "routers": [{"kind": "save_event"}, {"kind": "rules"}]},
    {"kind": "Asset", "id": "dev-b", "orgId": ORG_B, "assetUUID": "DB", "name": "b",
     "templateId": "pass-b", "routeGroupIds": ["rg-b"]},
    {"kind": "Rule", "id": "count-b", "orgId": ORG_B, "variables": [
        {"name": "seen", "type": "number", "default": 0}],
     "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "seen"}],
     "when": {"logic": "AND", "actions": ["bump"], "items": [{"type": "condition", "data": {
         "field": {"type": "event", "value": "data.n"}, "operator": "exists"}}]}},
    {"kind": "BusinessRule", "id": "count-b", "ruleId": "count-b", "orgId": ORG_B},
]  # fmt: skip

STATE_A = pipelinekit.STATE_KEY
STATE_B = f"state:{ORG_B}:count-b:seen"


def documents(script: str = PASS, extra: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Both tenants, org-a's template running ``script``, plus ``extra`` entities."""
    docs = [
        {**d, "scriptConversion": script} if d.get("id") == "pass" else d
        for d in pipelinekit.DOCUMENTS
    ]
    return [*docs, *TENANT_B, *extra]


def build(script: str = PASS, extra: Sequence[dict[str, Any]] = (), revision: int = 0) -> Catalog:
    from dataclasses import replace

    from eventray.pipeline.catalog import build_catalog
    from eventray.pipeline.errors import ConfigIssue
    from eventray.pipeline.loader import entity_from_dict

    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", d, issues) for d in documents(script, extra)]
    assert not issues, issues
    catalog = build_catalog([("test", e) for e in entities if e is not None])
    return replace(catalog, revision=revision)


def event(n: int, *, org: str = ORG, **extra: Any) -> OutboxMessage:
    """Event ``n`` as the ingress appends it (tracker ``e{n}``, or ``b{n}`` for org-b); one
    with another ``device`` is left for the lane to bind."""
    a = org == ORG
    body = orjson.dumps({"device": "D1" if a else "DB", "n": n, **extra})
    headers = ingested_headers(
        data_source_id=SOURCE if a else SOURCE_B,
        received_ms=BASE_MS + n * 1000,
        org_id=org,
        asset_id="" if "device" in extra else "dev-1" if a else "dev-b",  # the lane binds
    )
    return OutboxMessage(SUBJECT, body, f"{'e' if a else 'b'}{n:04d}", headers)


@dataclass
class World:
    """A lane, the stream, the store's twin and the service, on one catalog that tests
    change as ``eventray apply`` would (:meth:`apply`)."""

    rig: Rig
    catalog: Catalog
    archive: MemoryArchive
    dead: MemoryDeadLetters
    service: ReplayService
    handled: int = 0

    def apply(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.rig.pipeline.use(catalog)

    async def send(self, *messages: OutboxMessage) -> None:
        errors = await self.rig.stream.append(list(messages), timeout_s=1.0)
        assert errors == [""] * len(messages), errors

    async def drain(self) -> None:
        """Run the lane until everything in the partition is acknowledged."""
        lane = self.rig.lane
        lane.start()
        try:
            import asyncio
            import time

            deadline = time.monotonic() + 20
            while self.rig.stream.acknowledged(0) < len(self.rig.stream.log(0)):
                assert time.monotonic() < deadline, "the lane did not drain the partition"
                await asyncio.sleep(0.005)
        finally:
            await lane.stop()

    def rows(self, table: str) -> list[dict[str, Any]]:
        return as_dicts(self.rig.sink.rows)[table]

    def events_final(self) -> dict[str, dict[str, Any]]:
        """The events table as ``FINAL`` reads it (the row inserted last per key), by tracker;
        asserts each tracker has one row."""
        kept: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in self.rows("events"):
            kept[(row["path_key"], row["created"], row["event_tracker_id"])] = row
        by_tracker: dict[str, dict[str, Any]] = {}
        for row in kept.values():
            assert row["event_tracker_id"] not in by_tracker, row["event_tracker_id"]
            by_tracker[row["event_tracker_id"]] = row
        return by_tracker

    def state(self) -> dict[str, Any]:
        return self.rig.state.dump()


async def world(script: str = PASS, extra: Sequence[dict[str, Any]] = ()) -> World:
    catalog = build(script, extra)
    rig = await pipelinekit.rig(documents=TENANT_B)
    rig.pipeline.use(catalog)
    archive = MemoryArchive(rig.stream, trigger_subject=TRIGGERS)
    dead = MemoryDeadLetters(rig.sink)
    out = World(rig, catalog, archive, dead, None)  # type: ignore[arg-type]
    out.service = ReplayService(
        catalog=lambda: out.catalog,
        archive=archive,
        store=dead,
        partitions=1,
        subject_prefix="eventray.in",
        trigger_subject=TRIGGERS,
        now_ms=lambda: BASE_MS + 3_600_000,
    )
    return out


EVERYONE = Scope.everything()
SCOPE_A = Scope("0001")
"""The scope of a caller of org-a (pathKeys are assigned in document order)."""
