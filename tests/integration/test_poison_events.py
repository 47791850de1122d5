"""One poison event among good ones cannot stop a partition (real nats-server, chDB, QuickJS in
its crash-isolated script host).

Each case is an event a probe of the running stack found wedging its partition for good: a
lone UTF-16 surrogate in a field a template copies, template results that cannot be serialised
(cyclic, BigInt, a throwing getter, a ``toJSON`` that loops, 20 MB), templates that override
``JSON.parse``, ``Array.prototype.push`` or the runtime's own helpers, a trigger payload over
the stream's limit, the hostile templates of issue 7 (allocating without end, looping,
recursing without end, writing to ``Object.prototype``, ``Math`` and ``JSON``; every other
event reports what it finds in the intrinsics, and finds nothing), and a regular expression that
backtracks without end (before QuickJS-ng, nothing but the host's 30 s watchdog stopped it, for
every such event). For each: the good events are stored and acknowledged, the bad one is
in the DLQ with its stage and reason, and the partition's lag is back to 0.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.batch import BatchPipeline
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.errors import ConfigIssue
from eventray.pipeline.ingress import ingested_headers
from eventray.pipeline.lane import Lane
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.rules.stage import LocalRules
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.schema import TABLES
from eventray.pipeline.storage.sink import StoreSink

pytestmark = pytest.mark.services

# One template whose transform misbehaves as the payload's `kind` asks; `copy` is copied into
# the result as it came (a lone surrogate survives JSON.parse in JavaScript).
TRANSFORM = r"""
const kind = payload.kind;
let data = { n: payload.n, copy: kind === "fat-trigger" ? "big" : payload.copy };
if (kind === "cyclic") { data.self = data; }
if (kind === "bigint") { data.big = 10n ** 30n; }
if (kind === "getter") { Object.defineProperty(data, "boom", { enumerable: true, get() { throw new Error("getter says no"); } }); }
if (kind === "tojson-loop") { data.toJSON = function () { for (;;) {} }; }
if (kind === "huge") { data.blob = "x".repeat(20 * 1024 * 1024); }
if (kind === "memory-bomb") { const keep = []; for (;;) { keep.push("x".repeat(1 << 20) + keep.length); } }
if (kind === "busy-loop") { for (;;) {} }
if (kind === "recursion") { const down = (n) => down(n + 1) + 1; down(0); }
if (kind === "regex") { /(a+)+$/.test("a".repeat(40) + "!"); }
if (kind === "pollute") {
  try { Object.prototype.polluted = "yes"; } catch (e) {}
  try { Math.polluted = "yes"; } catch (e) {}
  try { JSON.stringify = function () { return "{}"; }; } catch (e) {}
}
// Every event reports what an earlier event may have left in the intrinsics: always null.
data.leak = ({}).polluted ?? Math.polluted ?? null;
if (kind === "override-parse") { JSON.parse = function () { return []; }; }
if (kind === "override-push") { Array.prototype.push = function () { return 0; }; }
if (kind === "override-helper") {
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    if (name.startsWith("__")) { try { globalThis[name] = function () { return "forged"; }; } catch (e) {} }
  }
}
let metadata = {};
// Under the result limit (1 MB) on its own, but a trigger's render context carries the event's
// metadata twice (in the event and beside it): its delivery is over the stream's limit.
if (kind === "fat-trigger") { data.fat = true; metadata = { blob: payload.copy }; }
result = { eventType: "reading", eventId: String(payload.n), data: data, metadata: metadata,
           created: "2026-11-30T08:00:00Z" };
"""

DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "Organization", "id": "org", "name": "org", "type": "customer"},
    {"kind": "DataSource", "id": "ds", "orgId": "org", "name": "ds", "protocol": "http",
     "auth": {"type": "none"}, "assetBind": {"uuidFields": ["device"]}},
    {"kind": "AssetTemplate", "id": "t", "orgId": "org", "name": "t", "scriptConversion": TRANSFORM},
    {"kind": "RouteGroup", "id": "rg", "orgId": "org", "name": "rg", "version": 1, "routers": [
        {"kind": "save_event"},
        {"kind": "trigger", "trigger": {"triggerId": "hook"},
         "match": {"rules": [{"field": "data.fat", "operator": "exists", "value": True}]}},
    ]},
    {"kind": "Trigger", "id": "hook", "orgId": "org", "name": "hook", "triggerType": "http",
     "config": {"http": {"endpoint": "http://127.0.0.1:9/hook", "method": "POST"}}},
    {"kind": "Asset", "id": "dev", "orgId": "org", "assetUUID": "D", "name": "dev",
     "templateId": "t", "routeGroupIds": ["rg"]},
]  # fmt: skip

# kind -> (the DLQ stage, a fragment of the reason)
CASES = {
    "lone-surrogate": ("transform", "surrogate"),
    "cyclic": ("transform", "cyclic"),
    "bigint": ("transform", "BigInt"),
    "getter": ("transform", "getter says no"),
    "tojson-loop": ("transform", "time limit"),
    "huge": ("transform", "exceeds the limit"),
    "override-parse": ("", ""),
    "override-push": ("", ""),
    "override-helper": ("", ""),
    "fat-trigger": ("outbox", "exceeds the stream's limit"),
    "memory-bomb": ("transform", "memory"),
    "busy-loop": ("transform", "time limit"),
    "recursion": ("transform", "call stack size exceeded"),
    "regex": ("transform", "time limit"),
    "pollute": ("", ""),
}


def _catalog() -> Catalog:
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", d, issues) for d in DOCUMENTS]
    assert not issues
    return build_catalog([("test", e) for e in entities if e is not None])


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEventStore]:
    # chDB opens one directory per process: the cases share it and tell their rows apart by
    # their trackers' prefix.
    with ChdbEventStore(path=tmp_path_factory.mktemp("chdb") / "db", database="poison") as opened:
        opened.ensure_schema()
        yield opened


@pytest.fixture
def host() -> Iterator[ScriptHost]:
    # One per case: a case that overrides intrinsics must not be the next case's problem.
    running = ScriptHost(ScriptLimits(time_s=0.3))
    running.start()
    yield running
    running.close()


def _body(n: int, kind: str = "good") -> bytes:
    copy = "x" * 600_000 if kind == "fat-trigger" else f"c{n}"
    raw = orjson.dumps({"device": "D", "n": n, "kind": kind, "copy": copy})
    if kind == "lone-surrogate":  # valid JSON text; no Python str can hold it
        raw = raw.replace(b'"copy":"c' + str(n).encode() + b'"', b'"copy":"\\ud83d"')
    return raw


@pytest.mark.parametrize("kind", list(CASES))
def test_one_poison_event_among_good_ones(
    kind: str, nats: RunningNats, store: ChdbEventStore, host: ScriptHost
) -> None:
    async def scenario() -> None:
        catalog = _catalog()
        name = f"P{uuid.uuid4().hex[:8]}"
        bus = JetStreamBus(url=nats.url, stream=name, subject_prefix=f"p.{name.lower()}")
        await bus.connect()
        triggers = f"{bus.subject_prefix}-triggers"
        await bus.ensure_stream(storage="memory", extra_subjects=(triggers,))
        for n in range(40):
            await bus.publish(
                f"{bus.subject_prefix}.p0",
                _body(n, kind if n == 17 else "good"),
                msg_id=f"{kind}-{n:03d}",
                headers=ingested_headers(
                    data_source_id="ds", received_ms=1_764_489_600_000, org_id="org",
                    asset_id="dev",  # bound by the ingress: the lane hands the body to JS as is
                ),
            )  # fmt: skip
        pipeline = BatchPipeline(
            catalog=catalog,
            executor=TemplateExecutor(ScriptCache(host=host)),
            rules=LocalRules(
                partitions=[0], store=MemoryStateStore(), clock=SystemClock(), catalog=catalog
            ),
            sink=StoreSink(store),
            outbox=bus.outbox(),
            clock=SystemClock(),
            retention=RetentionPolicy(defaults=dict.fromkeys(TABLES, 3650)),
            trigger_subject=triggers,
        )
        lane = Lane(pipeline, {0: await bus.source(0)}, batch_size=25, linger_s=0.01)
        await lane.run_until(40, timeout_s=60)
        assert await bus.pending(0) == 0  # everything acknowledged: the partition moved on
        await bus.close()

    asyncio.run(scenario())
    mine = {"prefix": f"{kind}-"}
    stored = store.select(
        "SELECT event_id, payload FROM poison.events FINAL "
        "WHERE startsWith(event_tracker_id, {prefix:String}) ORDER BY toUInt32(event_id)",
        mine,
    )
    for row in stored:  # nothing the hostile event did reached another event's result
        data = orjson.loads(row["payload"])
        assert (data["leak"] is None and data["copy"] == f"c{row['event_id']}") or (
            row["event_id"] == "17"
        ), row
    dlq = store.select(
        "SELECT event_tracker_id, stage, error FROM poison.dlq FINAL "
        "WHERE startsWith(event_tracker_id, {prefix:String})",
        mine,
    )
    stage, reason = CASES[kind]
    if stage:
        assert [r["event_tracker_id"] for r in dlq] == [f"{kind}-017"], dlq
        assert dlq[0]["stage"] == stage and reason in dlq[0]["error"], dlq
        assert [int(r["event_id"]) for r in stored] == [n for n in range(40) if n != 17]
    else:
        # Overriding intrinsics or helpers may fail the event itself or not, but it never
        # costs another event its result: every other event is stored, intact.
        assert {r["event_tracker_id"] for r in dlq} <= {f"{kind}-017"}
        assert [int(r["event_id"]) for r in stored if r["event_id"] != "17"] == [
            n for n in range(40) if n != 17
        ]
    rows = store.select(
        "SELECT payload FROM poison.events FINAL WHERE event_tracker_id = {t:String}",
        {"t": f"{kind}-018"},
    )
    assert orjson.loads(rows[0]["payload"])["copy"] == "c18"  # the next event is its own
