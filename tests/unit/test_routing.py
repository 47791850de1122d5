"""Route groups (pipeline/routing.py) and dot paths (pipeline/paths.py)."""

from __future__ import annotations

from typing import Any

import pytest

from eventray.pipeline.models.routing import MatchRule, RouteGroup
from eventray.pipeline.paths import MISSING, compile_path, parse_path
from eventray.pipeline.routing import Dispatch, GroupHistory, RouteTable, compile_match_rule

VIEW: dict[str, Any] = {
    "eventType": "temperature",
    "eventId": "e1",
    "data": {
        "temperature": 80.5,
        "status": "critical",
        "count": 3,
        "doorOpen": False,
        "nothing": None,
        "label": "freezer-07",
        "readings": [{"v": 1.5}, {"v": 2.5}],
    },
    "metadata": {"assetId": "freezer-1"},
}


def matches(field: str, operator: str, value: Any = None, view: dict[str, Any] = VIEW) -> bool:
    rule = MatchRule.model_validate({"field": field, "operator": operator, "value": value})
    return compile_match_rule(rule)(view)


def record(h: GroupHistory) -> dict[str, Any]:
    """A history record as plain data (independent of how GroupHistory stores it)."""
    return {
        "id": h.route_group_id,
        "version": h.version,
        "evaluated": h.evaluated,
        "matched": list(h.matched),
        "dispatched": list(h.dispatched),
        "skipped": h.skipped,
    }


def hist(
    gid: str,
    version: int,
    evaluated: int = 0,
    matched: list[int] | None = None,
    dispatched: list[str] | None = None,
    skipped: str | None = None,
) -> dict[str, Any]:
    return {
        "id": gid,
        "version": version,
        "evaluated": evaluated,
        "matched": matched or [],
        "dispatched": dispatched or [],
        "skipped": skipped,
    }


def group(gid: str, routers: list[dict[str, Any]], **extra: Any) -> RouteGroup:
    return RouteGroup.model_validate(
        {"id": gid, "orgId": "acme", "name": gid, "routers": routers, **extra}
    )


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        # eq / neq
        ("data.status", "eq", "critical", True),
        ("data.status", "eq", "warning", False),
        ("data.count", "eq", 3.0, True),  # 3 == 3.0
        ("data.count", "eq", "3", True),  # same loose equality as the rule engine
        ("data.count", "eq", "4", False),
        ("data.doorOpen", "eq", False, True),
        ("data.doorOpen", "eq", 0, False),  # a bool never equals a number
        ("data.nothing", "eq", None, True),
        ("data.status", "neq", "warning", True),
        ("data.status", "neq", "critical", False),
        # gt / gte / lt / lte on numbers
        ("data.temperature", "gt", 80, True),
        ("data.temperature", "gt", 80.5, False),
        ("data.temperature", "gte", 80.5, True),
        ("data.temperature", "gte", 81, False),
        ("data.temperature", "lt", 81, True),
        ("data.temperature", "lt", 80.5, False),
        ("data.temperature", "lte", 80.5, True),
        ("data.temperature", "lte", 80, False),
        # two strings compare as text; a numeric string compares as a number
        ("data.status", "gt", "b", True),
        ("data.status", "lt", "b", False),
        ("data.count", "gt", "1", True),
        ("data.count", "gt", "10", False),
        ("data.doorOpen", "lt", 1, False),  # bools are not numbers
        # in / nin
        ("data.status", "in", ["warning", "critical"], True),
        ("data.status", "in", ["ok", "warning"], False),
        ("data.count", "in", [1, 2, 3], True),
        ("data.status", "nin", ["ok", "warning"], True),
        ("data.status", "nin", ["critical"], False),
        # exists (value true or omitted) and exists: false
        ("data.status", "exists", True, True),
        ("data.status", "exists", None, True),
        ("data.missing", "exists", True, False),
        ("data.missing", "exists", False, True),
        ("data.status", "exists", False, False),
        ("data.nothing", "exists", True, False),  # null counts as absent, as in rules
        ("data.nothing", "exists", False, True),
        # regex (search, not full match)
        ("data.label", "regex", r"^freezer-\d+$", True),
        ("data.label", "regex", r"^cold", False),
        ("data.count", "regex", r"^3$", True),  # numbers are matched as their text
        ("data.readings", "regex", r".*", False),  # lists are never matched
    ],
)
def test_router_operator(field: str, operator: str, value: Any, expected: bool) -> None:
    assert matches(field, operator, value) is expected


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("eq", "x"),
        ("neq", "x"),
        ("neq", None),
        ("gt", 0),
        ("gte", 0),
        ("lt", 0),
        ("lte", 0),
        ("in", ["x"]),
        ("nin", ["x"]),
        ("nin", []),
        ("regex", ".*"),
        ("exists", True),
    ],
)
def test_missing_field_fails_its_rule(operator: str, value: Any) -> None:
    assert matches("data.absent", operator, value) is False


def test_match_rule_value_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a list value"):
        MatchRule.model_validate({"field": "a", "operator": "in", "value": "x"})
    with pytest.raises(ValueError, match="string pattern"):
        MatchRule.model_validate({"field": "a", "operator": "regex", "value": 5})


# --------------------------------------------------------------------------- paths


def test_array_index_in_brackets_and_as_numeric_segment() -> None:
    assert matches("data.readings[1].v", "eq", 2.5) is True
    assert matches("data.readings.1.v", "eq", 2.5) is True
    assert matches("data.readings[0].v", "eq", 2.5) is False
    assert matches("data.readings[2].v", "exists", True) is False


def test_parse_path_segments() -> None:
    assert parse_path("data.readings[1].v") == ("data", "readings", 1, "v")
    assert parse_path("data.readings.1.v") == ("data", "readings", "1", "v")
    assert parse_path("a[0][2]") == ("a", 0, 2)
    assert parse_path("eventType") == ("eventType",)


def test_compile_path_getters() -> None:
    doc = {"a": {"list": [10, 20], "map": {"1": "one"}, "none": None}, "s": "text"}
    assert compile_path("a.list[1]")(doc) == 20
    assert compile_path("a.list.0")(doc) == 10
    assert compile_path("a.map[1]")(doc) == "one"  # an index into a dict reads the key "1"
    assert compile_path("a.map.1")(doc) == "one"
    assert compile_path("a.none")(doc) is None
    assert compile_path("a.list[2]")(doc) is MISSING
    assert compile_path("a.list.x")(doc) is MISSING
    assert compile_path("s.length")(doc) is MISSING
    assert compile_path("zzz")(doc) is MISSING
    assert compile_path("zzz")(["not", "a", "dict"]) is MISSING
    assert compile_path("s")(doc) == "text"
    # two- and three-key paths through values that are not objects are missing too
    odd = {"n": None, "s": "str", "l": [{"x": 1}], "d": {"s": "str", "l": [1], "n": None}}
    for path in ("n.x", "s.x", "l.x", "d.s.x", "d.l.x", "d.n.x", "l.x.y", "d.zz.x"):
        assert compile_path(path)(odd) is MISSING, path
    assert compile_path("l.0.x")(odd) == 1
    assert compile_path("d.l.0")(odd) == 1
    assert compile_path("d.s")(odd) == "str"
    assert compile_path("d.s")("not a dict") is MISSING


@pytest.mark.parametrize("path", ["", " a", "a ", "a..b", "a.", "a[x]", "a]", "a[0", "a[-1]"])
def test_invalid_paths_raise_value_error(path: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        parse_path(path)
    with pytest.raises(ValueError, match="invalid path"):
        compile_path(path)


@pytest.mark.parametrize("path", [".a", "a[0]b"])
def test_malformed_separators_raise_value_error(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


def test_invalid_router_field_path_fails_at_compile_time() -> None:
    rule = MatchRule.model_validate({"field": "data..x", "operator": "exists"})
    with pytest.raises(ValueError, match="invalid path"):
        compile_match_rule(rule)


# --------------------------------------------------------------------------- route groups


def test_policy_all_needs_every_rule_and_any_needs_one() -> None:
    rules = [
        {"field": "data.status", "operator": "eq", "value": "critical"},
        {"field": "data.temperature", "operator": "lt", "value": 0},
    ]
    table = RouteTable(
        [
            group("all", [{"kind": "save_event", "match": {"policy": "all", "rules": rules}}]),
            group("any", [{"kind": "save_event", "match": {"policy": "any", "rules": rules}}]),
        ]
    )
    assert table.route(VIEW, ["all"]).dispatches == []
    assert table.route(VIEW, ["any"]).dispatches == [Dispatch("save_event")]
    cold = {**VIEW, "data": {**VIEW["data"], "temperature": -20}}
    assert table.route(cold, ["all"]).dispatches == [Dispatch("save_event")]


def test_policy_defaults_to_all() -> None:
    rules = [
        {"field": "data.status", "operator": "eq", "value": "critical"},
        {"field": "data.absent", "operator": "exists"},
    ]
    table = RouteTable([group("g", [{"kind": "rules", "match": {"rules": rules}}])])
    assert table.route(VIEW, ["g"]).dispatches == []


def test_no_match_or_empty_rules_always_dispatch() -> None:
    table = RouteTable([
        group("g", [
            {"kind": "save_event"},
            {"kind": "rules", "match": {"policy": "any", "rules": []}},
        ])
    ])  # fmt: skip
    result = table.route({}, ["g"])
    assert result.dispatches == [Dispatch("save_event"), Dispatch("rules")]
    assert [record(h) for h in result.history] == [
        hist("g", 1, evaluated=2, matched=[0, 1], dispatched=["save_event", "rules"])
    ]


def test_trigger_and_publish_dispatch_targets() -> None:
    table = RouteTable([
        group("g", [
            {"kind": "trigger", "trigger": {"triggerId": "ops-webhook"}},
            {"kind": "publish", "publish": {"subject": "events.hot"}},
            {"kind": "trigger", "trigger": {"triggerId": "pager"}},
        ])
    ])  # fmt: skip
    result = table.route(VIEW, ["g"])
    assert result.dispatches == [
        Dispatch("trigger", "ops-webhook"),
        Dispatch("publish", "events.hot"),
        Dispatch("trigger", "pager"),
    ]
    assert result.history[0].dispatched == ["trigger", "publish", "trigger"]
    assert result.has("publish") and result.has("trigger")
    assert not result.has("save_event")


def test_dispatches_are_deduplicated_across_groups_but_history_keeps_each() -> None:
    table = RouteTable([
        group("a", [{"kind": "save_event"}, {"kind": "trigger", "trigger": {"triggerId": "t1"}}]),
        group("b", [
            {"kind": "save_event"},
            {"kind": "trigger", "trigger": {"triggerId": "t1"}},
            {"kind": "trigger", "trigger": {"triggerId": "t2"}},
        ]),
    ])  # fmt: skip
    result = table.route(VIEW, ["a", "b"])
    assert result.dispatches == [
        Dispatch("save_event"),
        Dispatch("trigger", "t1"),
        Dispatch("trigger", "t2"),
    ]
    assert [h.dispatched for h in result.history] == [
        ["save_event", "trigger"],
        ["save_event", "trigger", "trigger"],
    ]


def test_history_records_evaluated_matched_indexes_and_dispatched_kinds() -> None:
    table = RouteTable([
        group(
            "g",
            [
                {"kind": "save_event"},
                {"kind": "rules", "match": {"rules": [
                    {"field": "eventType", "operator": "eq", "value": "door"}]}},
                {"kind": "publish", "publish": {"subject": "s"}, "match": {"rules": [
                    {"field": "data.count", "operator": "gte", "value": 3}]}},
            ],
            version=7,
        )
    ])  # fmt: skip
    result = table.route(VIEW, ["g"])
    assert [record(h) for h in result.history] == [
        hist("g", 7, evaluated=3, matched=[0, 2], dispatched=["save_event", "publish"])
    ]
    assert result.dispatches == [Dispatch("save_event"), Dispatch("publish", "s")]


def test_disabled_and_unknown_groups_are_recorded_and_skipped() -> None:
    table = RouteTable(
        [
            group("off", [{"kind": "save_event"}], enabled=False, version=3),
            group("on", [{"kind": "rules"}]),
        ]
    )
    result = table.route(VIEW, ["ghost", "off", "on"])
    assert result.dispatches == [Dispatch("rules")]
    assert [record(h) for h in result.history] == [
        hist("ghost", 0, skipped="unknown route group"),
        hist("off", 3, skipped="disabled"),
        hist("on", 1, evaluated=1, matched=[0], dispatched=["rules"]),
    ]
    assert "on" in table and "off" in table and "ghost" not in table


def test_groups_are_evaluated_in_the_assets_order() -> None:
    table = RouteTable(
        [
            group("x", [{"kind": "publish", "publish": {"subject": "x"}}]),
            group("y", [{"kind": "publish", "publish": {"subject": "y"}}]),
        ]
    )
    result = table.route(VIEW, ["y", "x"])
    assert [d.target for d in result.dispatches] == ["y", "x"]
    assert [h.route_group_id for h in result.history] == ["y", "x"]
    assert table.route(VIEW, []).dispatches == []
