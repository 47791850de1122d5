"""The log and DLQ query builder (pipeline/storage/logs.py), the scope in the events builder
(pipeline/storage/query.py) and the exports (pipeline/storage/export.py), without a server.

What the engine makes of the SQL is tests/integration/test_reading.py's job; here: every user
value is a parameter, the scope is always there, cursors belong to one query.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.storage.export import csv_value, export, follow
from eventray.pipeline.storage.fields import CaptureFilter
from eventray.pipeline.storage.logs import (
    LOG_KINDS,
    SORT_KEYS,
    LogQuery,
    build_log_query,
    decode_log_row,
    log_columns,
)
from eventray.pipeline.storage.query import EventQuery, build_event_count, build_event_query
from eventray.pipeline.storage.schema import TABLES, table_ddl
from eventray.pipeline.storage.scope import Scope

EVIL = "x' OR 1=1 -- \\'; DROP TABLE events {limit:UInt32}"
TENANT = Scope("0001/0002")


def test_sort_keys_are_the_tables_sorting_keys() -> None:
    for table in TABLES:
        if table in ("events", "dlq_redrive"):  # redrive records: read by pipeline/replay
            continue
        [order] = re.findall(r"ORDER BY \((.*)\)", table_ddl(table))
        assert SORT_KEYS[table] == tuple(order.split(", ")), table
    assert set(LOG_KINDS.values()) == set(TABLES) - {"events", "dlq_redrive"}


def test_every_filter_is_a_typed_parameter_and_the_scope_comes_first() -> None:
    query = LogQuery(
        "logs_trigger", TENANT, org_id=EVIL, path_key="0001/0002/0001", business_rule_id=EVIL,
        action_id=EVIL, trigger_id=EVIL, success=False, errored=True,
        since=datetime(2026, 3, 1, tzinfo=UTC), until=datetime(2026, 3, 2, tzinfo=UTC),
        event_tracker_id=EVIL, limit=5, newest_first=True,
    )  # fmt: skip
    sql, params = build_log_query(query, database="evt_test")
    assert EVIL not in sql and "x'" not in sql
    assert sql.splitlines() == [
        "SELECT created, org_id, path_key, event_tracker_id, retention_days, business_rule_id, "
        "action_id, trigger_id, attempt, success, duration_ms, request, response, error "
        "FROM evt_test.logs_trigger FINAL",
        "WHERE (path_key = {scope_path:String} OR startsWith(path_key, {scope_prefix:String})) "
        "AND org_id = {org_id:String} AND path_key = {path_key:String} "
        "AND business_rule_id = {f_business_rule_id:String} AND action_id = {f_action_id:String} "
        "AND trigger_id = {f_trigger_id:String} AND success = {f_success:UInt8} "
        "AND error != '' AND created >= {since:DateTime64(3, 'UTC')} "
        "AND created < {until:DateTime64(3, 'UTC')} "
        "AND event_tracker_id = {event_tracker_id:String}",
        "ORDER BY created DESC, org_id DESC, event_tracker_id DESC, business_rule_id DESC, "
        "action_id DESC, trigger_id DESC, attempt DESC",
        "LIMIT {limit:UInt32}",
    ]
    assert params == {
        "scope_path": "0001/0002", "scope_prefix": "0001/0002/", "org_id": EVIL,
        "path_key": "0001/0002/0001", "f_business_rule_id": EVIL, "f_action_id": EVIL,
        "f_trigger_id": EVIL, "f_success": 0, "since": "2026-03-01 00:00:00.000",
        "until": "2026-03-02 00:00:00.000", "event_tracker_id": EVIL, "limit": 6,
    }  # fmt: skip


@pytest.mark.parametrize("table", sorted(SORT_KEYS))
def test_every_table_reads_inside_the_scope_only(table: str) -> None:
    sql, params = build_log_query(LogQuery(table, TENANT))
    assert sql.splitlines()[1] == (
        "WHERE (path_key = {scope_path:String} OR startsWith(path_key, {scope_prefix:String}))"
    )
    assert f"FROM eventray.{table} FINAL" in sql
    assert params["scope_path"] == "0001/0002"
    platform, _ = build_log_query(LogQuery(table, Scope.platform()))
    assert platform.splitlines()[1] == "WHERE 1"
    with pytest.raises(InvalidQuery, match="needs the caller's scope"):
        LogQuery(table, None)  # type: ignore[arg-type]


def test_stage_matched_and_captures_map_to_their_columns() -> None:
    sql, params = build_log_query(LogQuery("logs_script", TENANT, stage="decode", success=False))
    assert "failed_stage = {f_stage:String} AND success = {f_success:UInt8}" in sql
    sql, _ = build_log_query(LogQuery("logs_rule", TENANT, matched=True, rule_id=EVIL))
    assert "rule_id = {f_rule_id:String} AND matched = {f_matched:UInt8}" in sql
    captures = (
        CaptureFilter("temperature", "gte", ("r1", EVIL), -15.0),
        CaptureFilter(EVIL, "eq", ("r1",), True),
        CaptureFilter("at", "lt", ("r1",), datetime(2026, 3, 1, tzinfo=UTC)),
        CaptureFilter("note", "neq", ("r1",), EVIL),
    )
    sql, params = build_log_query(LogQuery("logs_capture", TENANT, captures=captures))
    assert EVIL not in sql
    assert (
        "(rule_id IN {cap0_rules:Array(String)} AND mapContains(capture_number, "
        "{cap0_name:String}) AND capture_number[{cap0_name:String}] >= {cap0_value:Float64})"
    ) in sql
    assert "capture_bool[{cap1_name:String}] = {cap1_value:UInt8}" in sql
    assert "capture_date[{cap2_name:String}] < {cap2_value:DateTime64(3, 'UTC')}" in sql
    assert "capture_string[{cap3_name:String}] != {cap3_value:String}" in sql
    assert params["cap0_rules"] == ["r1", EVIL] and params["cap1_name"] == EVIL
    assert (params["cap1_value"], params["cap2_value"]) == (1, "2026-03-01 00:00:00.000")


def _cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode()


def test_a_cursor_continues_after_the_last_row_of_its_own_query_only() -> None:
    cursor = _cursor("logs_capture", "asc", "2026-03-01 08:00:00.000", "o'1", "t1", EVIL, 3)
    sql, params = build_log_query(LogQuery("logs_capture", TENANT, cursor=cursor))
    assert EVIL not in sql
    assert (
        "AND created >= {after_created:DateTime64(3, 'UTC')} AND (created, org_id, "
        "event_tracker_id, business_rule_id, position) > ({after_created:DateTime64(3, 'UTC')}, "
        "{after_0:String}, {after_1:String}, {after_2:String}, {after_3:UInt16})\n"
    ) in sql
    assert [params[k] for k in ("after_created", "after_0", "after_1", "after_2", "after_3")] == [
        "2026-03-01 08:00:00.000", "o'1", "t1", EVIL, 3,
    ]  # fmt: skip
    newest = _cursor("dlq", "desc", "2026-03-01 08:00:00.000", "o", "t", "decode", 7)
    sql, _ = build_log_query(LogQuery("dlq", TENANT, cursor=newest, newest_first=True))
    assert "created <= {after_created" in sql and "stream_seq) < ({after_created" in sql
    for table, bad, newest_first in [
        ("dlq", cursor, False),  # another table's
        ("dlq", newest, False),  # the other order's
        ("logs_capture", _cursor("logs_capture", "asc", "x", "o", "t", "b", "3"), False),
        ("logs_capture", _cursor("logs_capture", "asc", "x", "o", "t", "b"), False),
        ("dlq", "not-base64!", False),
        ("dlq", base64.urlsafe_b64encode(b"{}").decode(), False),
    ]:
        with pytest.raises(InvalidQuery, match="invalid cursor") as refused:
            LogQuery(table, TENANT, cursor=bad, newest_first=newest_first)
        assert refused.value.param == "cursor"


def test_limits_are_bounded() -> None:
    for limit in (0, 10_001, True):
        with pytest.raises(InvalidQuery, match=r"limit must be 1\.\.10000"):
            LogQuery("dlq", TENANT, limit=limit)
    with pytest.raises(InvalidQuery, match="unknown log table 'events'"):
        LogQuery("events", TENANT)


def test_the_events_query_ands_the_scope_to_any_organization_filter() -> None:
    query = EventQuery(scope=TENANT, org_id=EVIL, path_key="0001/0003", include_children=True)
    sql, params = build_event_query(query)
    assert sql.splitlines()[1] == (
        "WHERE (path_key = {scope_path:String} OR startsWith(path_key, {scope_prefix:String})) "
        "AND (path_key = {path_key:String} OR startsWith(path_key, {path_key_prefix:String}))"
    )
    assert params["scope_prefix"] == "0001/0002/" and params["path_key_prefix"] == "0001/0003/"
    whole, _ = build_event_query(EventQuery(scope=TENANT))
    assert whole.splitlines()[1].startswith("WHERE (path_key = {scope_path:String} OR")
    count, count_params = build_event_count(EventQuery(scope=Scope.platform()))
    assert count.endswith("WHERE 1") and count_params == {}
    with pytest.raises(InvalidQuery, match="org_id is required"):
        EventQuery()


def test_rows_decode_to_python_values() -> None:
    raw = decode_log_row("events_raw", {
        "created": "2026-03-01 08:00:00.000", "retention_days": "30", "body": '{"a": 1}',
        "body_encoding": "text",
    })  # fmt: skip
    assert raw["retention_days"] == 30 and raw["body_json"] == {"a": 1}
    binary = decode_log_row("dlq", {"message": "//4A", "message_encoding": "base64",
                                    "deliveries": 3, "stream_seq": "18446744073709551615"})  # fmt: skip
    assert binary["message_json"] is None and binary["stream_seq"] == 2**64 - 1
    rule = decode_log_row("logs_rule", {"matched": 1, "state_changes": '{"n": {"from": 0, "to": 1}}',
                                        "trace": "", "actions": ["a"]})  # fmt: skip
    assert rule["matched"] is True and rule["trace"] is None
    assert rule["state_changes"] == {"n": {"from": 0, "to": 1}}
    router = decode_log_row("logs_router", {"matched": ["1", 2], "evaluated": 2})
    assert router["matched"] == [1, 2]
    assert log_columns("dlq")[-1] == "message_json" and log_columns("logs_rule")[-1] == "error"


# -- export ----------------------------------------------------------------------------------


@dataclass
class FakePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


ROWS = [
    {"created": "2026-03-01 08:00:00.000", "eva_number": {1: -19.4}, "ok": True, "note": None,
     "text": 'comma, "quote"\nnewline', "tags": ["a", "b"]},
    {"created": "2026-03-01 08:01:00.000", "eva_number": {}, "ok": False, "note": "n",
     "text": "=cmd", "tags": []},
]  # fmt: skip


def _pages() -> list[FakePage]:
    return [FakePage(ROWS[:1], "c1"), FakePage(ROWS[1:], None)]


def test_follow_asks_for_the_next_page_only_after_the_last_one() -> None:
    asked: list[str | None] = []
    pages = _pages()

    def fetch(cursor: str | None) -> FakePage:
        asked.append(cursor)
        return pages[len(asked) - 1]

    iterator = follow(fetch)
    assert next(iterator).rows == ROWS[:1] and asked == [None]
    assert next(iterator).rows == ROWS[1:] and asked == [None, "c1"]
    assert list(iterator) == []
    assert len(list(follow(lambda c: FakePage([], "again"), max_pages=3))) == 3


def test_jsonl_and_json_round_trip_and_say_where_to_resume() -> None:
    lines = b"".join(export(_pages(), "jsonl")).decode().splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {**ROWS[0], "eva_number": {"1": -19.4}}, ROWS[1],
    ]  # fmt: skip
    stopped = b"".join(export(_pages()[:1], "jsonl")).decode().splitlines()
    assert orjson.loads(stopped[-1]) == {"nextCursor": "c1"}
    document = orjson.loads(b"".join(export(_pages()[:1], "json")))
    assert document == {"rows": [{**ROWS[0], "eva_number": {"1": -19.4}}], "nextCursor": "c1"}
    assert orjson.loads(b"".join(export([], "json"))) == {"rows": [], "nextCursor": None}
    assert orjson.loads(b"".join(export([FakePage([], None)], "json")))["rows"] == []


def test_csv_flattens_maps_and_lists_as_json_text() -> None:
    chunks = list(export(_pages(), "csv"))
    assert len(chunks) == 2  # one per page
    parsed = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert parsed == [
        ["created", "eva_number", "ok", "note", "text", "tags"],
        ["2026-03-01 08:00:00.000", '{"1":-19.4}', "true", "", 'comma, "quote"\nnewline',
         '["a","b"]'],
        ["2026-03-01 08:01:00.000", "{}", "false", "n", "'=cmd", "[]"],  # neutralised
    ]  # fmt: skip
    empty = b"".join(export([FakePage([], None)], "csv", columns=("a", "b")))
    assert empty == b"a,b\n"
    assert b"".join(export([], "csv", columns=("a",))) == b"a\n"
    assert csv_value(1.5) == "1.5" and csv_value({"k": [1]}) == '{"k":[1]}'
    # a device's text that a spreadsheet would run as a formula is neutralised; numbers are not
    assert csv_value('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert csv_value("@SUM(A1)") == "'@SUM(A1)" and csv_value(-19.4) == "-19.4"
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        export([], "xml")  # type: ignore[arg-type]
