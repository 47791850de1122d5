"""The EventStore contract, run against every adapter that can run here.

- ``chdb``: :class:`ChdbEventStore` on a temporary directory.
- ``http-stand-in``: :class:`ClickHouseEventStore` (clickhouse-connect over real HTTP) against
  the transport stand-in (cluster/services/clickhouse_http.py), which executes in chDB.
- ``clickhouse``: the same adapter against a real server named by
  ``EVENTRAY_TEST_CLICKHOUSE_URL`` (skipped when unset).

The data is a real batch: the sample tenant through the real EventProcessor (see
tests/unit/test_storage_rows.py), turned into rows by pipeline/storage/rows.py, inserted, and
read back through the query builder. chDB opens one data directory per process, so the chDB
store and the stand-in share one directory and use different databases.
"""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from eventray.cluster.services.procs import free_port
from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.adapters.clickhouse_store import (
    ClickHouseEventStore,
    ClickHouseQueryError,
    ClickHouseUnavailableError,
)
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.query import EventQuery, count_events, query_events
from eventray.pipeline.storage.rows import json_each_row, ms_from_iso
from eventray.pipeline.storage.schema import DATE_COLUMNS, TABLES, columns_of
from eventray.testing.clickhouse_http import ClickHouseHttpStandIn
from tests.unit.test_storage_rows import DEPOT, FACTORY, ROOM1, ROOM2, SIMULATED, sample

pytestmark = pytest.mark.services

REAL_SERVER = "EVENTRAY_TEST_CLICKHOUSE_URL"
ALL = "0001"  # mapex, the root: every organization of the sample


@dataclass
class Backend:
    """Opens stores on fresh databases of one adapter, and closes them all at the end."""

    name: str
    open_store: Callable[[str], EventStore]
    drop: Callable[[str], None] = lambda database: None
    opened: list[tuple[str, EventStore]] = field(default_factory=list)

    def new_store(self) -> tuple[EventStore, str]:
        database = f"evt_{uuid.uuid4().hex[:12]}"
        store = self.open_store(database)
        self.opened.append((database, store))
        store.ensure_schema()
        return store, database

    def close(self) -> None:
        for database, store in self.opened:
            try:
                store.close()
            finally:
                self.drop(database)


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module", params=["chdb", "http-stand-in", "clickhouse"])
def backend(request: pytest.FixtureRequest, chdb_dir: Path) -> Iterator[Backend]:
    if request.param == "chdb":
        chosen = Backend("chdb", lambda db: ChdbEventStore(path=chdb_dir, database=db))
        yield chosen
        chosen.close()
    elif request.param == "http-stand-in":
        with ClickHouseHttpStandIn(path=chdb_dir) as server:
            chosen = Backend(
                "http-stand-in", lambda db: ClickHouseEventStore(url=server.url, database=db)
            )
            yield chosen
            chosen.close()
    else:
        url = os.environ.get(REAL_SERVER)
        if not url:
            pytest.skip(f"{REAL_SERVER} is not set: no real ClickHouse server to test against")
        import clickhouse_connect

        def drop(database: str) -> None:
            client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
            try:
                client.command(f"DROP DATABASE IF EXISTS {database}")
            finally:
                client.close()

        chosen = Backend("clickhouse", lambda db: ClickHouseEventStore(url=url, database=db), drop)
        yield chosen
        chosen.close()


def as_row(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    """A row dict (dates as text, as the tests read them) as the tuple stores take."""
    values = dict(row)
    for name in DATE_COLUMNS[table]:
        value = values[name]
        if isinstance(value, dict):
            values[name] = {k: ms_from_iso(v) for k, v in value.items()}
        else:
            values[name] = ms_from_iso(value)
    return tuple(values[name] for name in columns_of(table))


def insert_all(store: EventStore, rows: dict[str, list[dict[str, Any]]]) -> None:
    for table, items in rows.items():
        store.insert(table, [as_row(table, row) for row in items])


@dataclass(frozen=True)
class Loaded:
    store: EventStore
    database: str
    rows: dict[str, list[dict[str, Any]]]

    def events(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Every matching event, through the query builder, following the cursor."""
        query = EventQuery(limit=kwargs.pop("limit", 10_000), **kwargs)
        page = query_events(self.store, query, database=self.database)
        rows = list(page.rows)
        while page.next_cursor is not None:
            query = EventQuery(**{**kwargs, "limit": query.limit, "cursor": page.next_cursor})
            page = query_events(self.store, query, database=self.database)
            rows += page.rows
        return rows

    def table(self, table: str, order: str = "event_tracker_id") -> list[dict[str, Any]]:
        sql = f"SELECT * FROM {self.database}.{table} FINAL ORDER BY {order}"
        return self.store.select(sql)


@pytest.fixture(scope="module")
def loaded(backend: Backend) -> Loaded:
    """The sample batch, inserted twice (a redelivery) into a fresh database."""
    store, database = backend.new_store()
    rows = sample().rows()
    for _ in range(2):
        for table, items in sample().tuples().items():
            store.insert(table, items)
    return Loaded(store, database, rows)


def trackers(rows: list[dict[str, Any]]) -> list[str]:
    return [row["event_tracker_id"] for row in rows]


def expected_order(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_tracker_id"] for r in sorted(rows, key=lambda r: (r["created"], r["event_tracker_id"]))]  # fmt: skip


def test_schema_has_row_ttl_and_the_typed_maps(loaded: Loaded) -> None:
    for table in TABLES:
        statement = loaded.store.select(f"SHOW CREATE TABLE {loaded.database}.{table}")[0]
        text = statement["statement"]
        assert "TTL toDateTime(created) + toIntervalDay(retention_days)" in text, table
        assert "ENGINE = ReplacingMergeTree" in text, table
    columns = loaded.store.select(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'events' "
        "AND name LIKE 'eva_%' ORDER BY name",
        {"db": loaded.database},
    )
    assert columns == [
        {"name": "eva_bool", "type": "Map(UInt16, UInt8)"},
        {"name": "eva_date", "type": "Map(UInt16, DateTime64(3, 'UTC'))"},
        {"name": "eva_number", "type": "Map(UInt16, Float64)"},
        {"name": "eva_string", "type": "Map(UInt16, String)"},
    ]


def test_events_are_stored_once_with_eva_values_in_the_typed_maps(loaded: Loaded) -> None:
    events = loaded.events(org_id="alpha-cold-room-1", path_key=ROOM1)
    room1 = [r for r in loaded.rows["events"] if r["org_id"] == "alpha-cold-room-1"]
    assert trackers(events) == expected_order(room1)
    assert trackers(events)[-2:] == ["t0", "t1"]  # 08:00 and 08:01, after the simulated 06:xx
    by_id = {row["event_tracker_id"]: row for row in events}
    assert by_id["t0"] == {
        "created": "2026-03-01 08:00:00.000", "org_id": "alpha-cold-room-1", "path_key": ROOM1,
        "event_tracker_id": "t0", "retention_days": 3650, "asset_id": "freezer-01",
        "template_id": "freezer-json", "event_type": "temperature",
        "event_id": "FRZ-0001:2026-03-01T08:00:00Z", "source": "ds-gateway-http",
        "payload": {"temperature": -19.4, "humidity": 61, "doorOpen": False, "battery": 88,
                    "status": "ok"},
        "metadata": {"source": "gateway"}, "eva_number": {1: -19.4, 2: 61.0},
        "eva_string": {4: "ok"}, "eva_bool": {3: False}, "eva_date": {5: "2026-03-01 08:00:00.000"},
        "stream_seq": 1,
    }  # fmt: skip
    assert (by_id["t1"]["event_type"], by_id["t1"]["eva_bool"], by_id["t1"]["eva_number"]) == (
        "door",
        {3: True},
        {1: -12.0},
    )
    everything = loaded.events(org_id="mapex", path_key=ALL, include_children=True)
    assert sorted(trackers(everything)) == sorted(trackers(loaded.rows["events"]))
    assert len(everything) == 5 + SIMULATED  # written twice, read once
    assert count_events(loaded.store, EventQuery(org_id="mapex", path_key=ALL,
                        include_children=True), database=loaded.database) == 5 + SIMULATED  # fmt: skip


def test_raw_bodies_only_for_debug_assets_and_bind_failures(loaded: Loaded) -> None:
    raw = loaded.table("events_raw")
    debug = {r["event_tracker_id"] for r in loaded.rows["events"] if r["asset_id"] == "freezer-01"}
    assert set(trackers(raw)) == debug | {"t5", "t6"}
    assert len(raw) == len(debug) + 2
    failures = [
        (r["event_tracker_id"], r["org_id"], r["path_key"], r["stage"], r["reason"], r["body"],
         r["body_encoding"], r["data_source_id"], r["created"])
        for r in raw if r["stage"]
    ]  # fmt: skip
    assert failures == [
        ("t5", "factory-alpha", FACTORY, "bind", "no asset with assetUUID 'NOPE'",
         '{"deviceId": "NOPE"}', "text", "ds-gateway-http", "2026-03-01 08:04:30.000"),
        ("t6", "factory-alpha", FACTORY, "bind",
         "body is not JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)",
         "//4=", "base64", "ds-gateway-http", "2026-03-01 08:04:40.000"),
    ]  # fmt: skip
    t0 = next(r for r in raw if r["event_tracker_id"] == "t0")
    assert orjson.loads(t0["body"])["readings"] == {"t": -19.4, "rh": 61}


def test_script_router_rule_and_capture_logs(loaded: Loaded) -> None:
    scripts = {r["event_tracker_id"]: r for r in loaded.table("logs_script")}
    assert len(scripts) == len(sample().items)
    assert {k: scripts["t2"][k] for k in ("success", "failed_stage", "error", "error_line")} == {
        "success": 0, "failed_stage": "validate", "error_line": 10,
        "error": 'Error: "temperature" must be less than or equal to 40',
    }  # fmt: skip
    assert (scripts["t0"]["success"], int(scripts["t0"]["duration_us"])) == (1, 125)

    routers = loaded.table("logs_router", "event_tracker_id, route_group_id")
    assert len(routers) == len(loaded.rows["logs_router"])
    t7 = [(r["route_group_id"], r["evaluated"], r["matched"], r["dispatched"])
          for r in routers if r["event_tracker_id"] == "t7"]  # fmt: skip
    assert t7 == [
        ("rg-cold-chain", 2, [0, 1], ["save_event", "rules"]),
        ("rg-critical-webhook", 1, [0], ["trigger"]),
    ]

    rules = loaded.table("logs_rule", "event_tracker_id, business_rule_id")
    assert len(rules) == len(loaded.rows["logs_rule"])
    t1 = {r["business_rule_id"]: r for r in rules if r["event_tracker_id"] == "t1"}
    high = t1["factory-alpha-high-temp"]
    assert (high["matched"], high["actions"], high["trace"], high["asset_id"]) == (
        1,
        ["remember", "bump", "audit", "notify"],
        "",
        "freezer-01",
    )
    assert orjson.loads(high["state_changes"]) == {
        "lastAlertAt": {"from": "", "to": "2026-03-01T08:05:00.000Z"},
        "counter": {"from": 0, "to": 1},
    }
    door = orjson.loads(t1["cold-room-door"]["trace"])  # the debug business rule
    assert (door["logic"], door["result"], door["items"][0]["items"][0]["left"]) == (
        "OR",
        True,
        True,
    )

    captures = loaded.table("logs_capture", "event_tracker_id, business_rule_id, position")
    assert len(captures) == len(loaded.rows["logs_capture"])
    t4 = [r for r in captures if r["event_tracker_id"] == "t4"]
    assert [(r["business_rule_id"], r["action_id"], r["name"], r["capture_number"],
             r["capture_string"], r["capture_bool"], r["capture_date"]) for r in t4] == [
        ("factory-alpha-high-temp", "audit", "high_temperature", {"temperature": -14.1},
         {"assetId": "lora-th-01"}, {}, {}),
    ]  # fmt: skip


def test_dlq_and_trigger_log(loaded: Loaded) -> None:
    dlq = loaded.table("dlq")
    assert [(r["event_tracker_id"], r["stage"], r["deliveries"], r["retention_days"]) for r in dlq] == [
        ("t2", "validate", 3, 3650),
        ("t3", "validate", 1, 3650),
        ("t5", "bind", 1, 4500),  # factory-alpha's own DLQ retention
        ("t6", "bind", 1, 4500),
    ]  # fmt: skip
    t2 = dlq[0]
    assert (t2["message"], t2["message_encoding"], t2["error_line"], int(t2["stream_seq"])) == (
        '{"deviceId": "FRZ-0002", "ts": "2026-03-01T08:02:00Z", "readings": {"t": 85}, "door": "closed"}',
        "text", 10, 3,
    )  # fmt: skip
    attempts = loaded.table("logs_trigger", "attempt")
    assert [(r["attempt"], r["success"], r["duration_ms"], r["error"], r["created"]) for r in attempts] == [
        (1, 0, 120, "HTTP 503 from slack: it's \\ down", "2026-03-01 08:05:01.000"),
        (2, 1, 80, "", "2026-03-01 08:05:03.000"),
    ]  # fmt: skip


def test_retention_days_follow_the_org_overrides(loaded: Loaded) -> None:
    room2 = loaded.events(org_id="alpha-cold-room-2", path_key=ROOM2)
    assert room2 and {r["retention_days"] for r in room2} == {4000}
    room1 = loaded.events(org_id="alpha-cold-room-1", path_key=ROOM1)
    assert room1 and {r["retention_days"] for r in room1} == {3650}
    rules = loaded.store.select(
        f"SELECT DISTINCT org_id, retention_days FROM {loaded.database}.logs_rule ORDER BY org_id"
    )
    assert [(r["org_id"], r["retention_days"]) for r in rules] == [
        ("alpha-cold-room-1", 3650),
        ("alpha-cold-room-2", 5000),
    ]


def test_a_redelivered_batch_counts_once(backend: Backend) -> None:
    store, database = backend.new_store()
    rows = sample().rows()
    query = EventQuery(org_id="mapex", path_key=ALL, include_children=True)
    insert_all(store, rows)
    assert count_events(store, query, database=database) == 5 + SIMULATED
    redelivered = sample().rows()
    for row in redelivered["dlq"]:
        row["deliveries"] += 1
    insert_all(store, redelivered)
    assert count_events(store, query, database=database) == 5 + SIMULATED
    for table in TABLES:
        counted = store.select(f"SELECT count() AS n FROM {database}.{table} FINAL")
        assert int(counted[0]["n"]) == len(rows[table]), table
    dlq = store.select(f"SELECT event_tracker_id, deliveries FROM {database}.dlq FINAL ORDER BY 1")
    assert [(r["event_tracker_id"], r["deliveries"]) for r in dlq] == [
        ("t2", 4), ("t3", 2), ("t5", 2), ("t6", 2)  # the latest delivery count wins
    ]  # fmt: skip
    extra = dict(rows["events"][0], event_tracker_id="t0-other")  # a new row does land
    store.insert("events", [as_row("events", extra)])
    assert count_events(store, query, database=database) == 6 + SIMULATED


def test_rows_that_do_not_fit_their_columns_are_refused_permanently(backend: Backend) -> None:
    store, database = backend.new_store()
    [good] = sample().tuples()["dlq"][:1]
    bad = (*good[:-1], "not a sequence number")  # stream_seq is a UInt64
    with pytest.raises(PermanentError):
        store.insert("dlq", [good, bad])
    with pytest.raises(PermanentError):
        store.insert("dlq", [good[:-1]])  # a column short
    with pytest.raises(ValueError, match="unknown table"):
        store.insert("nope", [good])
    store.insert("dlq", [good])
    counted = store.select(f"SELECT count() AS n FROM {database}.dlq FINAL")
    assert int(counted[0]["n"]) == 1  # nothing of the refused inserts landed


def test_one_event_failing_at_two_stages_keeps_both_dlq_rows(backend: Backend) -> None:
    store, database = backend.new_store()
    [failure] = sample().rows()["dlq"][:1]
    store.insert(
        "dlq",
        [
            as_row("dlq", dict(failure, stage="trigger:slack-ops")),
            as_row("dlq", dict(failure, stage="trigger:pager")),
        ],
    )
    rows = store.select(f"SELECT stage FROM {database}.dlq FINAL ORDER BY stage")
    assert [r["stage"] for r in rows] == ["trigger:pager", "trigger:slack-ops"]


def test_query_filters(loaded: Loaded) -> None:
    saved = loaded.rows["events"]

    def ids(**kwargs: Any) -> set[str]:
        return set(trackers(loaded.events(**kwargs)))

    def where(test: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {r["event_tracker_id"] for r in saved if test(r)}

    assert ids(org_id="factory-alpha", path_key=FACTORY) == set()  # no assets of its own
    factory = ids(org_id="factory-alpha", path_key=FACTORY, include_children=True)
    assert factory == where(lambda r: r["path_key"].startswith(FACTORY + "/"))
    assert "t8" not in factory and {"t0", "t1", "t4", "t7"} <= factory
    assert ids(org_id="depot-beta", path_key=DEPOT) == where(lambda r: r["org_id"] == "depot-beta")
    assert ids(org_id="depot-beta") == ids(org_id="depot-beta", path_key=DEPOT)
    assert ids(org_id="mapex", path_key=ALL, include_children=True, asset_id="lora-th-01") == where(
        lambda r: r["asset_id"] == "lora-th-01"
    )
    assert ids(org_id="mapex", path_key=ALL, include_children=True, event_type="door") == where(
        lambda r: r["event_type"] == "door"
    )
    since, until = datetime(2026, 3, 1, 6, 1, tzinfo=UTC), datetime(2026, 3, 1, 8, 2, tzinfo=UTC)
    window = ids(org_id="mapex", path_key=ALL, include_children=True, since=since, until=until)
    assert window == where(
        lambda r: "2026-03-01 06:01:00.000" <= r["created"] < "2026-03-01 08:02:00.000"
    )
    assert {"t0", "t1"} <= window and "t7" not in window  # t7 is at 08:02:00, excluded
    assert ids(org_id="alpha-cold-room-2", event_tracker_id="t4") == {"t4"}
    assert ids(org_id="alpha-cold-room-1", event_tracker_id="t4") == set()  # another tenant's

    def eva(*filters: Any) -> set[str]:
        return ids(org_id="mapex", path_key=ALL, include_children=True, eva=tuple(filters))

    hot = eva((1, "gte", -15.0))
    assert hot == where(lambda r: r["eva_number"].get(1, -999.0) >= -15.0)
    assert {"t1", "t4", "t7"} <= hot and "t0" not in hot
    assert eva((4, "eq", "critical")) == where(lambda r: r["eva_string"].get(4) == "critical")
    assert eva((3, "eq", True)) == where(lambda r: r["eva_bool"].get(3) == 1)
    # a missing key matches nothing, not the type's default: the probe has no door field
    assert "t4" not in eva((3, "neq", True)) and "t0" in eva((3, "neq", True))
    late = eva((5, "gte", datetime(2026, 3, 1, 8, 1, tzinfo=UTC)))
    assert late == where(lambda r: r["eva_date"].get(5, "") >= "2026-03-01 08:01:00.000")
    assert {"t1", "t7"} <= late
    assert eva((1, "gte", -15.0), (4, "eq", "critical"), (2, "lt", 55)) == where(
        lambda r: r["eva_number"].get(1, -999) >= -15 and r["eva_string"].get(4) == "critical"
        and 2 in r["eva_number"] and r["eva_number"][2] < 55
    )  # fmt: skip


def test_cursor_pages_of_seven_give_every_row_once_in_order(loaded: Loaded) -> None:
    query = EventQuery(org_id="mapex", path_key=ALL, include_children=True, limit=7)
    seen: list[str] = []
    pages = 0
    page = query_events(loaded.store, query, database=loaded.database)
    while True:
        pages += 1
        assert len(page.rows) == 7 or page.next_cursor is None
        seen += trackers(page.rows)
        if page.next_cursor is None:
            break
        query = EventQuery(org_id="mapex", path_key=ALL, include_children=True, limit=7,
                           cursor=page.next_cursor)  # fmt: skip
        page = query_events(loaded.store, query, database=loaded.database)
    assert seen == expected_order(loaded.rows["events"])
    assert pages == -(-(5 + SIMULATED) // 7)
    ties = [r["created"] for r in loaded.rows["events"]]
    assert len(set(ties)) < len(ties)  # pages really break ties on the tracker id


def test_parameters_with_quotes_and_backslashes_are_values(loaded: Loaded) -> None:
    nasty = ["it's", "a\\b", "\\N", "tab\there", "new\nline", "x' OR '1'='1", "\\'", "é€"]
    for value in nasty:
        rows = loaded.store.select("SELECT {v:String} AS v, length({v:String}) AS n", {"v": value})
        assert rows == [{"v": value, "n": len(value.encode())}], value
    evil = "x' OR 1=1 --"
    assert loaded.events(org_id="mapex", path_key=ALL, include_children=True, asset_id=evil) == []
    assert loaded.events(org_id=evil) == []
    store, database = loaded.store, loaded.database
    row = dict(loaded.rows["events"][0], event_tracker_id="quote-test", org_id="q'org\\",
               event_type="it's \\ a \"type\"\n", path_key="9999")  # fmt: skip
    store.insert("events", [as_row("events", row)])
    found = EventQuery(org_id="q'org\\", event_type='it\'s \\ a "type"\n')
    assert trackers(query_events(store, found, database=database).rows) == ["quote-test"]
    assert query_events(store, EventQuery(org_id="q'org"), database=database).rows == []


def test_errors_are_translated(backend: Backend, loaded: Loaded) -> None:
    with pytest.raises(PermanentError) as refused:
        loaded.store.select(f"SELECT nope FROM {loaded.database}.events")
    assert not refused.value.retryable and "nope" in str(refused.value)
    with pytest.raises(ValueError, match="unknown table 'evnts'"):
        loaded.store.insert("evnts", [()])
    if backend.name == "chdb":
        return
    with pytest.raises(ClickHouseQueryError, match="nope"):
        loaded.store.select(f"SELECT nope FROM {loaded.database}.events")


def test_an_unreachable_server_is_retryable(chdb_dir: Path) -> None:
    with pytest.raises(ClickHouseUnavailableError) as refused:
        ClickHouseEventStore(url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    assert refused.value.retryable and isinstance(refused.value.__cause__, Exception)
    server = ClickHouseHttpStandIn(path=chdb_dir).start()
    store = ClickHouseEventStore(url=server.url, database="evt_gone")
    try:
        store.ensure_schema()
        server.stop()  # the server goes away between two batches
        with pytest.raises(ClickHouseUnavailableError) as lost:
            store.insert("dlq", sample().tuples()["dlq"])
        assert isinstance(lost.value, RetryableError)
    finally:
        store.close()
        server.stop()


def test_the_stand_in_speaks_the_http_interface_the_client_uses(chdb_dir: Path) -> None:
    import urllib3

    with ClickHouseHttpStandIn(path=chdb_dir, username="writer", password="s3cret") as server:
        with pytest.raises(ClickHouseQueryError, match="code: 516"):
            ClickHouseEventStore(url=server.url, username="writer", password="wrong")
        store = ClickHouseEventStore(url=server.url, username="writer", password="s3cret",
                                     database="evt_wire")  # fmt: skip
        http = urllib3.PoolManager()
        auth = urllib3.make_headers(basic_auth="writer:s3cret")
        try:
            store.ensure_schema()
            big = "é'\\\t" * 3000  # over 4 KB: clickhouse-connect sends it as multipart form data
            assert store.select("SELECT length({v:String}) AS n", {"v": big}) == [{"n": 15000}]
            assert http.request("GET", f"{server.url}/ping").data == b"Ok.\n"
            # the statement in the URL, the rows in a gzip body: the two are joined
            rows = sample().rows()["dlq"]
            insert = "INSERT INTO evt_wire.dlq FORMAT JSONEachRow"
            answer = http.request(
                "POST", f"{server.url}/?query={quote(insert)}", body=gzip.compress(json_each_row(rows)),
                headers={**auth, "Content-Encoding": "gzip"},
            )  # fmt: skip
            assert answer.status == 200
            assert orjson.loads(answer.headers["X-ClickHouse-Summary"])["written_rows"] == "4"
            counted = store.select("SELECT count() AS n FROM evt_wire.dlq FINAL")
            assert int(counted[0]["n"]) == 4
            refused = http.request("GET", f"{server.url}/?query={quote('DROP DATABASE evt_wire')}",
                                   headers=auth)  # fmt: skip
            assert (refused.status, refused.headers["X-ClickHouse-Exception-Code"]) == (500, "164")
            unknown = http.request("POST", f"{server.url}/?nonexistent_setting=1", body=b"SELECT 1",
                                   headers=auth)  # fmt: skip
            assert unknown.status == 500 and b"(UNKNOWN_SETTING)" in unknown.data
            assert unknown.headers["X-ClickHouse-Exception-Code"] == "115"
        finally:
            http.clear()
            store.close()
