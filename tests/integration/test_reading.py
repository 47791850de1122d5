"""Reading what was stored, against embedded chDB, for two sibling tenants.

The data is real: the sample tenant copied twice under the vendor (``acme-foods-t1`` and
``acme-foods-t2``, siblings, each with its own sites, devices, templates, rules and triggers),
simulated traffic plus refused and failing uplinks for both, run through the real
EventProcessor (QuickJS templates, route groups, business rules), turned into rows by
pipeline/storage/rows.py with every log kept, and inserted twice (a redelivery), into embedded
chDB and, through the ClickHouse adapter over HTTP, into the stand-in server (as the event
store contract suite does). Tenant 2's
freezer template keeps Temperature under id 2 and Humidity under id 1, the other way round
from tenant 1: a filter by name must not read one tenant's humidity as the other's
temperature.

Every query kind is checked against the rows that were inserted (the truth), not only for
leaks: a scope sees exactly its own rows, whatever the filters.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.adapters.clickhouse_store import ClickHouseEventStore
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigIssue, InvalidQuery, UnknownOrganization
from eventray.pipeline.loader import entity_from_dict, read_documents
from eventray.pipeline.ports import EventStore
from eventray.pipeline.processor import EventProcessor, Ingested
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.storage.activity import ActivityQuery, Card, query_activity
from eventray.pipeline.storage.export import export, follow
from eventray.pipeline.storage.logs import LOG_KINDS, SORT_KEYS, LogPage, query_logs
from eventray.pipeline.storage.query import EventPage, query_events
from eventray.pipeline.storage.reading import plan_event_query, plan_log_query
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, TriggerAttempt, as_dicts, batch_rows
from eventray.pipeline.storage.schema import TABLES, columns_of
from eventray.pipeline.storage.scope import Scope
from eventray.pipeline.storage.story import event_story
from eventray.testing.clickhouse_http import ClickHouseHttpStandIn
from eventray.testing.simulator import DeviceSimulator
from eventray.testing.tenants import copy_tenants

pytestmark = pytest.mark.services

TENANT_DIR = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"
NOW = datetime(2026, 3, 1, 8, 5, tzinfo=UTC)
T1, T2 = "acme-foods-t1", "acme-foods-t2"
KINDS = ("events", *LOG_KINDS)


def _documents() -> list[dict[str, Any]]:
    issues: list[ConfigIssue] = []
    documents = [doc for _, doc in read_documents([TENANT_DIR], issues)]
    assert not issues, issues
    documents = copy_tenants(documents, 2)
    for doc in documents:
        if doc["id"] == "freezer-json-t2":  # swap the ids of Temperature and Humidity
            for item in doc["dynamicFields"]:
                item["fieldId"] = {1: 2, 2: 1}.get(item["fieldId"], item["fieldId"])
    return documents


def _items(catalog: Catalog) -> list[Ingested]:
    simulator = DeviceSimulator(catalog, bad_ratio=0.0)
    items = []
    for index, uplink in enumerate(simulator.take(150)):
        received = int(simulator.now.timestamp() * 1000)
        items.append(Ingested(f"sim-{index:04d}", uplink.data_source_id, uplink.body, received,
                              100 + index))  # fmt: skip
    at = int((NOW - timedelta(minutes=1)).timestamp() * 1000)
    for n in (1, 2):
        gateway = f"ds-gateway-http-t{n}"
        invalid = {
            "deviceId": f"FRZ-0002-T{n}",
            "ts": "2026-03-01T08:02:00Z",
            "readings": {"t": 85},
        }
        items += [
            Ingested(f"unbound-t{n}", gateway, b'{"deviceId": "NOPE"}', at + n, 900 + n),
            Ingested(f"invalid-t{n}", gateway, orjson.dumps(invalid), at + 10 + n, 910 + n),
            Ingested(f"binary-t{n}", gateway, b"\xff\xfe\x00", at + 20 + n, 920 + n),
        ]  # fmt: skip
    return items


@dataclass(frozen=True)
class Stored:
    catalog: Catalog
    store: EventStore
    database: str
    truth: dict[str, list[dict[str, Any]]]
    scopes: dict[str, Scope]

    def page(self, query: Any) -> EventPage | LogPage:
        if hasattr(query, "table"):
            return query_logs(self.store, query, database=self.database)
        return query_events(self.store, query, database=self.database)

    def plan(self, kind: str, scope: Scope, **kwargs: Any) -> Any:
        if kind == "events":
            return plan_event_query(self.catalog, scope, **kwargs)
        return plan_log_query(self.catalog, scope, kind, **kwargs)

    def read_all(
        self, kind: str, scope: Scope, *, cursor: str | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Every row (after ``cursor``), following the cursor with small pages."""
        kwargs.setdefault("limit", 40)

        def fetch(after: str | None) -> EventPage | LogPage:
            return self.page(self.plan(kind, scope, cursor=after, **kwargs))

        return [row for page in follow(fetch, cursor=cursor) for row in page.rows]


def table_of(kind: str) -> str:
    return "events" if kind == "events" else LOG_KINDS[kind]


def key_of(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    key = ("event_tracker_id",) if table == "events" else SORT_KEYS[table]
    return (row["created"], *(row[c] for c in key))


@functools.cache
def _processed() -> tuple[Catalog, dict[str, list[tuple[Any, ...]]]]:
    """The catalog and the rows, processed once per session."""
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", doc, issues) for doc in _documents()]
    assert not issues, issues
    catalog = build_catalog([("test", e) for e in entities if e is not None])
    items = _items(catalog)
    processor = EventProcessor(
        catalog,
        TemplateExecutor(ScriptCache()),
        RuleEngine(catalog.rule_set(), MemoryStateStore(), clock=ManualClock(NOW)),
    )
    batch = processor.process(items)
    attempts = []
    for tenant in (T1, T2):  # two delivery attempts after one matched evaluation per tenant
        [first, *_] = [e for e in batch.rules.evaluations
                       if e.matched and catalog.is_ancestor_or_self(tenant, e.org_id)]  # fmt: skip
        for attempt, ok in ((1, False), (2, True)):
            attempts.append(TriggerAttempt(
                first.event_tracker_id, first.org_id, first.business_rule_id, "notify",
                f"slack-ops-{tenant[-2:]}", attempt, ok, 10 * attempt,
                NOW + timedelta(seconds=attempt), '{"text": "hot"}', "ok" if ok else "",
                "" if ok else "HTTP 503",
            ))  # fmt: skip
    context = RowContext.from_catalog(
        catalog, RetentionPolicy(defaults=dict.fromkeys(TABLES, 3650)), log_detail="all"
    )
    return catalog, batch_rows(batch, context, now=NOW, ingested=items, triggers=attempts)


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module", params=["chdb", "http-stand-in"])
def stored(request: pytest.FixtureRequest, chdb_dir: Path) -> Iterator[Stored]:
    """The rows in a fresh database: embedded chDB, or the ClickHouse adapter over HTTP
    (clickhouse-connect's parameter binding) against the stand-in that executes in chDB."""
    catalog, rows = _processed()
    database = f"rd_{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as resources:
        store: EventStore
        if request.param == "chdb":
            store = ChdbEventStore(path=chdb_dir, database=database)
        else:
            server = resources.enter_context(ClickHouseHttpStandIn(path=chdb_dir))
            store = ClickHouseEventStore(url=server.url, database=database)
        resources.callback(store.close)
        store.ensure_schema()
        for _ in range(2):  # a redelivery: FINAL reads each record once
            for table, items in rows.items():
                store.insert(table, items)
        scopes = {
            "t1": Scope.of_org(catalog, T1),
            "t2": Scope.of_org(catalog, T2),
            "parent": Scope.of_org(catalog, "mapex"),
            "platform": Scope.platform(),
        }
        truth = as_dicts(rows)
        for table, found in truth.items():  # every table has rows of both tenants
            if table == "dlq_redrive":  # redrive records (pipeline/replay), not pipeline rows
                continue
            assert {r["org_id"] for r in found if scopes["t1"].contains(r["path_key"])}, table
            assert {r["org_id"] for r in found if scopes["t2"].contains(r["path_key"])}, table
        yield Stored(catalog, store, database, truth, scopes)


# -- isolation -----------------------------------------------------------------------------


def _ids(stored: Stored, tenant: str) -> dict[str, list[str]]:
    """Identifiers of one tenant's things, by filter name."""
    scope = stored.scopes[tenant]
    rows = [r for table in stored.truth.values() for r in table if scope.contains(r["path_key"])]
    found: dict[str, list[str]] = {}
    for name in ("asset_id", "business_rule_id", "trigger_id", "data_source_id", "route_group_id",
                 "rule_id", "event_tracker_id"):  # fmt: skip
        values = sorted({str(r[name]) for r in rows if r.get(name)})
        assert values, (tenant, name)
        found[name] = values[:2]
    return found


def _filters(stored: Stored, kind: str) -> list[dict[str, Any]]:
    """Filters to try on ``kind``: none, a time window, and each of both tenants' ids for each
    filter the table has."""
    table = table_of(kind)
    columns = set(columns_of(table))
    out: list[dict[str, Any]] = [{}, {"since": NOW - timedelta(hours=2), "until": NOW}]
    allowed = {"asset_id", "event_tracker_id"} if kind == "events" else {
        "asset_id", "business_rule_id", "trigger_id", "data_source_id", "route_group_id",
        "rule_id", "event_tracker_id",
    }  # fmt: skip
    for tenant in ("t1", "t2"):
        for name, values in _ids(stored, tenant).items():
            if name in allowed and name in columns:
                out += [{name: value} for value in values]
    if "stage" in columns:
        out += [{"stage": "bind"}, {"stage": "validate"}]
    return out


def _truth(
    stored: Stored, kind: str, scope: Scope, filters: dict[str, Any]
) -> list[tuple[Any, ...]]:
    table = table_of(kind)
    since = filters.get("since")
    until = filters.get("until")
    low = since.strftime("%Y-%m-%d %H:%M:%S.000") if since else ""
    high = until.strftime("%Y-%m-%d %H:%M:%S.000") if until else "~"
    found = [
        key_of(table, row)
        for row in stored.truth[table]
        if scope.contains(row["path_key"])
        and low <= row["created"] < high
        and all(
            row[name] == value for name, value in filters.items() if name not in ("since", "until")
        )
    ]
    return sorted(set(found))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tenant", ["t1", "t2", "parent", "platform"])
def test_a_scope_reads_exactly_its_own_rows_whatever_the_filters(
    stored: Stored, kind: str, tenant: str
) -> None:
    scope = stored.scopes[tenant]
    table = table_of(kind)
    for filters in _filters(stored, kind):
        rows = stored.read_all(kind, scope, **filters)
        assert all(scope.contains(row["path_key"]) for row in rows), (kind, filters)
        keys = [key_of(table, row) for row in rows]
        assert keys == _truth(stored, kind, scope, filters), (kind, tenant, filters)
    own = _truth(stored, kind, scope, {})
    assert own  # each scope has rows of each kind
    if tenant in ("t1", "t2"):
        everything = _truth(stored, kind, Scope.platform(), {})
        assert len(own) < len(everything)


@pytest.mark.parametrize("kind", KINDS)
def test_an_organization_filter_outside_the_scope_is_refused_like_an_unknown_one(
    stored: Stored, kind: str
) -> None:
    t1 = stored.scopes["t1"]
    for org, children in (("acme-foods-t2", False), ("depot-beta-t2", True), ("mapex", True),
                          ("no-such-org", False)):  # fmt: skip
        with pytest.raises(UnknownOrganization, match=f"^unknown organization '{org}'$"):
            stored.plan(kind, t1, org_id=org, include_children=children)
    # Inside the scope: the organization's subtree.
    rows = stored.read_all(kind, t1, org_id="factory-alpha-t1", include_children=True)
    site = stored.catalog.orgs["factory-alpha-t1"].path_key
    assert all(r["path_key"].startswith(site) for r in rows)
    assert {r["org_id"] for r in rows} <= {"factory-alpha-t1", "alpha-bldg-a-t1",
                                           "alpha-a-floor-1-t1", "alpha-cold-room-1-t1",
                                           "alpha-cold-room-2-t1"}  # fmt: skip


# -- typed EVA filters by name -------------------------------------------------------------


def _eva_truth(stored: Stored, scope: Scope, field: str, test: Callable[[Any], bool],
               kind: str = "eva_number") -> list[str]:  # fmt: skip
    out = []
    for row in stored.truth["events"]:
        if not scope.contains(row["path_key"]):
            continue
        template = stored.catalog.templates[row["template_id"]]
        ids = [f.field_id for f in template.dynamic_fields if f.field == field]
        if ids and ids[0] in row[kind] and test(row[kind][ids[0]]):
            out.append(row["event_tracker_id"])
    return sorted(out)


def _trackers(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["event_tracker_id"] for r in rows)


@pytest.mark.parametrize("tenant", ["t1", "t2", "platform"])
def test_typed_filters_by_name_follow_each_template_s_field_ids(
    stored: Stored, tenant: str
) -> None:
    scope = stored.scopes[tenant]
    hot = stored.read_all("events", scope, where=["temperature > -19"])
    assert _trackers(hot) == _eva_truth(stored, scope, "Temperature", lambda v: v > -19)
    assert hot
    # Tenant 2's humidity sits under id 1, tenant 1's temperature's id: read by id, every
    # tenant-2 freezer event would "be hot".
    if tenant != "t1":
        by_id = stored.read_all("events", scope, where=["#1 > -19"])
        assert len(by_id) > len(hot)
    cases: list[tuple[list[str], str, Callable[[Any], bool], str]] = [
        (["temperature <= -15", "humidity >= 55"], "Temperature", lambda v: v <= -15, "eva_number"),
        (["doorOpen = true"], "Door open", lambda v: v == 1, "eva_bool"),
        (['"Door open" != true'], "Door open", lambda v: v == 0, "eva_bool"),
        (["status = critical"], "Status", lambda v: v == "critical", "eva_string"),
        (["readingTime >= 2026-03-01T07:02:00+01:00"], "Reading time",
         lambda v: v >= "2026-03-01 06:02:00.000", "eva_date"),
    ]  # fmt: skip
    for where, field, test, column in cases:
        found = _trackers(stored.read_all("events", scope, where=where))
        expected = _eva_truth(stored, scope, field, test, column)
        if len(where) == 2:
            humid = set(_eva_truth(stored, scope, "Humidity", lambda v: v >= 55))
            expected = [t for t in expected if t in humid]
        assert found == expected, where
        assert found or where[0].startswith("status"), where


def test_a_name_of_the_other_tenant_s_templates_is_unknown_in_this_scope(stored: Stored) -> None:
    # Both tenants have the same field names: a field only tenant 1 had would be unknown to 2.
    with pytest.raises(InvalidQuery, match="unknown field 'pressure'") as refused:
        stored.plan("events", stored.scopes["t2"], where=["pressure > 1"])
    assert "-t1" not in str(refused.value)


def test_captures_filter_by_typed_capture_fields(stored: Stored) -> None:
    for tenant in ("t1", "t2", "platform"):
        scope = stored.scopes[tenant]
        truth = stored.truth["logs_capture"]
        mine = [r for r in truth if scope.contains(r["path_key"])]
        opened = stored.read_all("captures", scope, where=["transition = opened"])
        assert sorted(key_of("logs_capture", r) for r in opened) == sorted(
            key_of("logs_capture", r) for r in mine
            if r["capture_string"].get("transition") == "opened"
        )  # fmt: skip
        cold = stored.read_all("captures", scope, where=["temperature < 100"])
        assert sorted(key_of("logs_capture", r) for r in cold) == sorted(
            key_of("logs_capture", r) for r in mine if "temperature" in r["capture_number"]
        )  # fmt: skip
        assert all(isinstance(r["capture_number"].get("temperature"), float) for r in cold)
    assert stored.read_all("captures", stored.scopes["platform"], where=["transition = opened"])


def test_flags_filter_rules_and_triggers(stored: Stored) -> None:
    platform = stored.scopes["platform"]
    delivered = stored.read_all("triggers", platform, success=True)
    assert [(r["trigger_id"], r["attempt"]) for r in delivered] == [("slack-ops-t1", 2),
                                                                    ("slack-ops-t2", 2)]  # fmt: skip
    failed = stored.read_all("triggers", platform, errored=True)
    assert {r["error"] for r in failed} == {"HTTP 503"}
    matched = stored.read_all("rules", platform, matched=True)
    assert matched and all(r["matched"] is True for r in matched)
    assert len(matched) == sum(1 for r in stored.truth["logs_rule"] if r["matched"])
    assert all(isinstance(r["state_changes"], dict) for r in matched)


# -- pagination ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_pages_are_stable_and_complete_in_either_order(stored: Stored, kind: str) -> None:
    table = table_of(kind)
    platform = stored.scopes["platform"]
    truth = _truth(stored, kind, platform, {})
    for limit in (3, 10_000):  # 3: pages split the rows of one event (equal created)
        keys = [key_of(table, r) for r in stored.read_all(kind, platform, limit=limit)]
        assert keys == truth, limit  # no row twice (FINAL collapses the redelivery), none lost
    if kind != "events":
        newest = stored.read_all(kind, platform, limit=5, newest_first=True)
        assert [key_of(table, r) for r in newest] == truth[::-1]
    # A cursor is the last row's key: the same page comes back for the same cursor.
    first = stored.page(stored.plan(kind, platform, limit=2))
    assert first.next_cursor is not None
    again = stored.page(stored.plan(kind, platform, limit=2, cursor=first.next_cursor))
    twice = stored.page(stored.plan(kind, platform, limit=2, cursor=first.next_cursor))
    assert again.rows == twice.rows and again.rows[0] != first.rows[-1]


def test_a_cursor_of_one_tenant_never_reads_the_other_s_rows(stored: Stored) -> None:
    for kind in KINDS:
        platform_page = stored.page(stored.plan(kind, stored.scopes["platform"], limit=3))
        assert platform_page.next_cursor is not None
        rows = stored.read_all(kind, stored.scopes["t1"], cursor=platform_page.next_cursor)
        assert all(stored.scopes["t1"].contains(r["path_key"]) for r in rows), kind


# -- one event's story -----------------------------------------------------------------------


def _rows_about(stored: Stored, tracker: str) -> set[tuple[str, tuple[Any, ...]]]:
    kinds = {"events": "event", "events_raw": "raw", "logs_script": "script",
             "logs_router": "router", "logs_rule": "rule", "logs_capture": "capture",
             "logs_trigger": "trigger", "dlq": "dlq"}  # fmt: skip
    return {
        (kinds[table], key_of(table, row))
        for table, rows in stored.truth.items()
        for row in rows
        if row["event_tracker_id"] == tracker
    }


def test_the_story_of_an_event_is_complete_ordered_and_scoped(stored: Stored) -> None:
    [tracker] = {r["event_tracker_id"] for r in stored.truth["logs_trigger"]
                 if r["trigger_id"] == "slack-ops-t1"}  # fmt: skip
    story = event_story(stored.store, stored.scopes["t1"], tracker, database=stored.database)
    assert story is not None
    steps = {(s.kind, key_of("events" if s.kind == "event" else {
        "raw": "events_raw", "script": "logs_script", "router": "logs_router", "rule": "logs_rule",
        "capture": "logs_capture", "trigger": "logs_trigger", "dlq": "dlq"}[s.kind], s.record))
        for s in story.steps}  # fmt: skip
    assert steps == _rows_about(stored, tracker)
    kinds = [s.kind for s in story.steps]
    assert kinds[-2:] == ["trigger", "trigger"]
    assert [s.record["attempt"] for s in story.steps if s.kind == "trigger"] == [1, 2]
    order = ["raw", "script", "router", "event", "rule", "capture", "trigger"]
    assert kinds == sorted(kinds, key=order.index)  # processing order
    assert story.summary()["stored"] and story.summary()["triggersDelivered"] == ["slack-ops-t1"]
    document = orjson.loads(orjson.dumps(story.to_dict(), option=orjson.OPT_NON_STR_KEYS))
    assert document["eventTrackerId"] == tracker and len(document["steps"]) == len(story.steps)
    # Another tenant, even its parent's sibling, reads nothing; the parent reads it all.
    assert event_story(stored.store, stored.scopes["t2"], tracker, database=stored.database) is None
    parent = event_story(stored.store, stored.scopes["parent"], tracker, database=stored.database)
    assert parent is not None and len(parent.steps) == len(story.steps)
    assert event_story(stored.store, stored.scopes["t1"], "never", database=stored.database) is None


def test_the_story_of_a_refused_event_shows_its_raw_body_and_dlq_entry(stored: Stored) -> None:
    for name, stage in (("unbound-t1", "bind"), ("binary-t1", "bind"), ("invalid-t1", "validate")):
        story = event_story(stored.store, stored.scopes["t1"], name, database=stored.database)
        assert story is not None, name
        assert {(s.kind, s.record.get("stage") or s.record.get("failed_stage")) for s in story.steps
                if s.kind in ("dlq", "script")} == {("dlq", stage), ("script", stage)}  # fmt: skip
        assert [s.kind for s in story.steps][-1] == "dlq"
        assert story.summary()["dlqStages"] == [stage] and not story.summary()["stored"]
    raw = event_story(stored.store, stored.scopes["t1"], "binary-t1", database=stored.database)
    assert raw is not None
    [body] = raw.of("raw")
    assert (body["body"], body["body_encoding"], body["body_json"]) == ("//4A", "base64", None)
    [text] = event_story(stored.store, stored.scopes["t1"], "unbound-t1",
                         database=stored.database).of("raw")  # type: ignore[union-attr]  # fmt: skip
    assert text["body_json"] == {"deviceId": "NOPE"}
    assert event_story(stored.store, stored.scopes["t2"], "unbound-t1",
                       database=stored.database) is None  # fmt: skip


# -- export ----------------------------------------------------------------------------------


def test_exports_stream_every_page_as_csv_and_json_lines(stored: Stored) -> None:
    t1 = stored.scopes["t1"]

    def fetch(cursor: str | None) -> EventPage | LogPage:
        return stored.page(stored.plan("events", t1, limit=10, cursor=cursor))

    expected = stored.read_all("events", t1)
    chunks = list(export(follow(fetch), "csv", columns=columns_of("events")))
    assert len(chunks) > 2  # page by page
    parsed = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [r["event_tracker_id"] for r in parsed] == [r["event_tracker_id"] for r in expected]
    assert list(parsed[0]) == list(columns_of("events"))
    first = parsed[0]
    assert orjson.loads(first["eva_number"]) == {
        str(k): v for k, v in expected[0]["eva_number"].items()
    }
    assert orjson.loads(first["payload"]) == expected[0]["payload"]
    lines = b"".join(export(follow(fetch), "jsonl")).splitlines()
    assert [orjson.loads(line)["event_tracker_id"] for line in lines] == [
        r["event_tracker_id"] for r in expected
    ]

    def dlq(cursor: str | None) -> EventPage | LogPage:
        return stored.page(stored.plan("dlq", t1, limit=2, cursor=cursor))

    rows = list(csv.DictReader(io.StringIO(b"".join(export(follow(dlq), "csv")).decode())))
    assert {r["stage"] for r in rows} == {"bind", "validate"}
    assert {r["message_encoding"] for r in rows} == {"text", "base64"}
    document = orjson.loads(b"".join(export(follow(dlq, max_pages=1), "json")))
    assert len(document["rows"]) == 2 and document["nextCursor"]


# -- activity (the Overview's per-minute counts) ---------------------------------------------


def _minute_of(created: Any) -> int:
    if isinstance(created, str):  # the rows' text form, UTC
        created = datetime.fromisoformat(created).replace(tzinfo=UTC)
    if isinstance(created, datetime):
        return int(created.timestamp()) // 60
    return int(created) // 60_000  # epoch ms


@pytest.mark.parametrize("tenant", ["t1", "platform"])
def test_activity_counts_each_subtree_per_minute_as_the_rows_say(
    stored: Stored, tenant: str
) -> None:
    """Cards for the vendor and both tenants, read with a tenant's scope and the platform's,
    over two hour-long windows (the events' and the DLQ's and deliveries'): each card counts
    exactly the rows (inserted twice: FINAL) in its subtree that the scope may read, per
    minute; a card outside the scope (the vendor, for a tenant) counts only what the scope
    holds."""
    catalog, scope = stored.catalog, stored.scopes[tenant]
    tables = {"events": "events", "dlq": "dlq", "triggers": "logs_trigger"}
    cards = tuple(Card(org, catalog.orgs[org].path_key) for org in ("mapex", T1, T2))
    totals = {c.org_id: dict.fromkeys(("events", "dlq", "triggersOk", "triggersFailed"), 0)
              for c in cards}  # fmt: skip
    for last in sorted({max(_minute_of(r["created"]) for r in stored.truth[t])
                        for t in ("events", "logs_trigger")}):  # fmt: skip
        now = datetime.fromtimestamp(last * 60 + 30, UTC)
        found = query_activity(stored.store, ActivityQuery(scope, cards, minutes=60, now=now),
                               database=stored.database)  # fmt: skip
        first = last - 59
        assert found.since == datetime.fromtimestamp(first * 60, UTC)
        for card in cards:
            expected = {name: [0] * 60 for name in totals[card.org_id]}
            for series, table in tables.items():
                for row in stored.truth[table]:
                    at, path = _minute_of(row["created"]) - first, row["path_key"]
                    inside = path == card.path_key or path.startswith(card.path_key + "/")
                    if not (0 <= at < 60 and inside and scope.contains(path)):
                        continue
                    name = series if series != "triggers" else (
                        "triggersOk" if row["success"] else "triggersFailed")  # fmt: skip
                    expected[name][at] += 1
            assert found.series[card.org_id] == expected, (card, now)
            for name, counts in expected.items():
                totals[card.org_id][name] += sum(counts)
        # pending entries, whenever made: DLQ rows, and refusals at bind with no DLQ row
        in_dlq = {r["event_tracker_id"] for r in stored.truth["dlq"]}
        waiting = [r["path_key"] for r in stored.truth["dlq"]] + [
            r["path_key"] for r in stored.truth["events_raw"]
            if r["stage"] == "bind" and r["event_tracker_id"] not in in_dlq
        ]  # fmt: skip
        for card in cards:
            expected_pending = len([p for p in waiting if scope.contains(p) and (
                p == card.path_key or p.startswith(card.path_key + "/"))])  # fmt: skip
            assert found.pending[card.org_id] == expected_pending, card
        assert found.pending[T1] > 0 and not found.pending_capped
    assert totals[T1]["events"] > 0 and totals[T1]["dlq"] > 0
    assert (totals[T1]["triggersOk"], totals[T1]["triggersFailed"]) == (1, 1)
    assert totals["mapex"]["events"] == totals[T1]["events"] + totals[T2]["events"]
    if tenant == "t1":
        assert not any(totals[T2].values())  # nothing of a sibling


def test_activity_refuses_a_window_or_card_count_it_cannot_serve() -> None:
    card = (Card("a", "0001"),)
    with pytest.raises(InvalidQuery, match=r"minutes must be 1\.\.60"):
        ActivityQuery(Scope.platform(), card, minutes=61)
    with pytest.raises(InvalidQuery, match=r"1\.\.50 organizations"):
        ActivityQuery(Scope.platform(), ())
