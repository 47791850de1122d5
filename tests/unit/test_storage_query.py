"""The event query builder (pipeline/storage/query.py), the DDL (pipeline/storage/schema.py)
and chDB's parameter text (pipeline/adapters/chdb_store.param_text), without a server.

What the engine makes of the SQL and the parameters is the contract suite's job
(tests/integration/test_event_store_contract.py); here: that user values never enter the SQL
text and that the right typed map and parameter types are chosen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from eventray.pipeline.adapters.chdb_store import param_text
from eventray.pipeline.storage.query import (
    EventQuery,
    build_event_count,
    build_event_query,
    decode_cursor,
    encode_cursor,
)
from eventray.pipeline.storage.schema import TABLES, check_identifier, ddl_statements

EVIL = "x' OR 1=1 -- \\'; DROP TABLE events"


def test_filters_become_typed_parameters_never_sql_text() -> None:
    query = EventQuery(
        org_id=EVIL,
        asset_id=EVIL,
        event_type="door",
        since=datetime(2026, 3, 1, 9, tzinfo=timezone(timedelta(hours=1))),
        until=datetime(2026, 3, 2),
        event_tracker_id="t1",
        eva=((1, "gte", -15), (4, "eq", EVIL), (3, "neq", True), (5, "lt", datetime(2026, 3, 1))),
        limit=7,
    )
    sql, params = build_event_query(query, database="evt_test")
    assert EVIL not in sql and "x'" not in sql
    assert sql.splitlines()[0].endswith("FROM evt_test.events FINAL")
    assert sql.splitlines()[1] == (
        "WHERE org_id = {org_id:String} AND asset_id = {asset_id:String} "
        "AND event_type = {event_type:String} AND created >= {since:DateTime64(3, 'UTC')} "
        "AND created < {until:DateTime64(3, 'UTC')} "
        "AND event_tracker_id = {event_tracker_id:String} "
        "AND mapContains(eva_number, {eva0_field:UInt16}) "
        "AND eva_number[{eva0_field:UInt16}] >= {eva0_value:Float64} "
        "AND mapContains(eva_string, {eva1_field:UInt16}) "
        "AND eva_string[{eva1_field:UInt16}] = {eva1_value:String} "
        "AND mapContains(eva_bool, {eva2_field:UInt16}) "
        "AND eva_bool[{eva2_field:UInt16}] != {eva2_value:UInt8} "
        "AND mapContains(eva_date, {eva3_field:UInt16}) "
        "AND eva_date[{eva3_field:UInt16}] < {eva3_value:DateTime64(3, 'UTC')}"
    )
    assert sql.splitlines()[2:] == ["ORDER BY created, event_tracker_id", "LIMIT {limit:UInt32}"]
    assert params == {
        "org_id": EVIL, "asset_id": EVIL, "event_type": "door",
        "since": "2026-03-01 08:00:00.000", "until": "2026-03-02 00:00:00.000",
        "event_tracker_id": "t1", "eva0_field": 1, "eva0_value": -15.0, "eva1_field": 4,
        "eva1_value": EVIL, "eva2_field": 3, "eva2_value": 1, "eva3_field": 5,
        "eva3_value": "2026-03-01 00:00:00.000", "limit": 8,
    }  # fmt: skip


def test_children_are_a_path_key_prefix_and_cursor_continues_after_the_last_row() -> None:
    cursor = encode_cursor("2026-03-01 08:00:00.000", "t'7")
    query = EventQuery(org_id="factory-alpha", path_key="0001/0001/0001", include_children=True,
                       cursor=cursor)  # fmt: skip
    sql, params = build_event_query(query)
    assert "FROM eventray.events FINAL" in sql
    assert sql.splitlines()[1] == (
        "WHERE (path_key = {path_key:String} OR startsWith(path_key, {path_key_prefix:String})) "
        "AND created >= {after_created:DateTime64(3, 'UTC')} AND (created > "
        "{after_created:DateTime64(3, 'UTC')} OR event_tracker_id > {after_tracker:String})"
    )
    assert params == {
        "path_key": "0001/0001/0001", "path_key_prefix": "0001/0001/0001/",
        "after_created": "2026-03-01 08:00:00.000", "after_tracker": "t'7", "limit": 101,
    }  # fmt: skip
    count_sql, count_params = build_event_count(query)
    assert count_sql.startswith("SELECT count() AS n FROM eventray.events FINAL\nWHERE (path_key")
    assert "after_created" not in count_sql and "limit" not in count_params


def test_one_org_may_name_its_path_key_for_the_sorting_key() -> None:
    sql, params = build_event_query(EventQuery(org_id="a", path_key="0001"))
    assert "WHERE org_id = {org_id:String} AND path_key = {path_key:String}\n" in sql
    assert params == {"org_id": "a", "path_key": "0001", "limit": 101}


def test_cursor_round_trip_and_refusals() -> None:
    assert decode_cursor(encode_cursor("2026-03-01 08:00:00.000", "é/\\")) == (
        "2026-03-01 08:00:00.000",
        "é/\\",
    )
    for bad in ("???", "WzFd", "e30="):  # not base64 / [1] / {}
        with pytest.raises(ValueError, match="invalid cursor"):
            decode_cursor(bad)
    with pytest.raises(ValueError, match="invalid cursor"):
        EventQuery(org_id="a", cursor="nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"org_id": ""}, "org_id is required"),
        ({"org_id": "a", "include_children": True}, "include_children needs"),
        ({"org_id": "a", "limit": 0}, r"limit must be 1..10000, got 0"),
        ({"org_id": "a", "limit": 10_001}, r"limit must be 1..10000"),
        ({"org_id": "a", "eva": ((70000, "eq", 1),)}, "EVA field id must be 0..65535"),
        ({"org_id": "a", "eva": ((1, "like", "x"),)}, "EVA operator must be one of"),
        ({"org_id": "a", "eva": ((3, "gt", True),)}, "EVA boolean filters take eq or neq"),
        ({"org_id": "a", "eva": ((3, "eq", [1]),)}, "EVA value must be"),
    ],
)
def test_invalid_queries_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventQuery(**kwargs)  # type: ignore[arg-type]


def test_identifiers_are_checked_not_escaped() -> None:
    assert check_identifier("evt_1") == "evt_1"
    for bad in ("", "1abc", "a.b", "a`b", "a b", "x" * 64):
        with pytest.raises(ValueError, match="not a plain identifier"):
            check_identifier(bad)
    with pytest.raises(ValueError, match="not a plain identifier"):
        build_event_query(EventQuery(org_id="a"), database="eventray; DROP")


def test_ddl_covers_every_table_with_ttl_and_replacing_engine() -> None:
    statements = ddl_statements("evt")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS evt"
    assert [s.split("\n")[0] for s in statements[1:]] == [
        f"CREATE TABLE IF NOT EXISTS evt.{t}" for t in TABLES
    ]
    for statement in statements[1:]:
        assert statement.endswith("TTL toDateTime(created) + toIntervalDay(retention_days)")
        assert "ENGINE = ReplacingMergeTree" in statement
    assert "    eva_date Map(UInt16, DateTime64(3, 'UTC'))," in statements[1]
    assert "ORDER BY (path_key, created, event_tracker_id)" in statements[1]
    dlq = statements[1 + TABLES.index("dlq")]
    assert "ENGINE = ReplacingMergeTree(deliveries)" in dlq
    # a redriven copy that fails again is a row of its own: its stream message is in the key
    assert "ORDER BY (org_id, event_tracker_id, stage, stream_seq)" in dlq


def test_chdb_parameter_text_escapes_what_the_escaped_format_reads() -> None:
    assert param_text("it's") == "it's"  # a top-level value is not quoted
    assert param_text("a\\b") == "a\\\\b"
    assert param_text("tab\there\nnew\rline\0") == "tab\\there\\nnew\\rline\\0"
    assert param_text("\\N") == "\\\\N"  # text, not NULL
    assert param_text(None) == "\\N"
    assert (param_text(True), param_text(False), param_text(7), param_text(-0.5)) == (
        "1",
        "0",
        "7",
        "-0.5",
    )
    assert param_text(datetime(2026, 3, 1, 8, tzinfo=UTC)) == "2026-03-01 08:00:00.000"
    assert param_text(["it's", "a\\b", 3, None]) == "['it\\'s', 'a\\\\b', 3, NULL]"
    with pytest.raises(TypeError, match="unsupported query parameter type dict"):
        param_text({"a": 1})
