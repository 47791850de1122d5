"""Route groups (pipeline/routing.py) and dot paths (pipeline/paths.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eventray.pipeline.models.routing import MatchRule, RouteGroup
from eventray.pipeline.paths import MISSING, compile_path, parse_path
from eventray.pipeline.routing import Dispatch, GroupHistory, RouteTable, compile_match_rule
from eventray.pipeline.rules.operands import match_value_problem

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


# --------------------------------------------------------------------------- generated code
# RouteTable runs each group as one generated function; compile_match_rule (the closures) is
# the reference. Every operator, over awkward values and path shapes, must decide the same.

ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, 3, 3.0, 2.5, -0.0, float("nan"), float("inf"), 2**53 + 1, 10**400,
    "3", "3.0", " 3", "1e3", "", "abc", "critical", "CRITICAL", "true", "False", "b", [],
    [1, 2], ["critical"], {"a": 1}, "freezer-07",
]  # fmt: skip
EXPECTED: dict[str, list[Any]] = {
    "eq": ODD_VALUES, "neq": ODD_VALUES,
    "gt": ODD_VALUES, "gte": ODD_VALUES, "lt": ODD_VALUES, "lte": ODD_VALUES,
    "in": [[], ["critical", "ok"], ["3", 3], [True, "true"], [None], ["a", "b", "c"], [2.5, 3]],
    "nin": [[], ["critical", "ok"], ["3", 3], [True, "true"], [None], ["a", "b", "c"]],
    "exists": [None, True, False],
    "regex": ["^c", r"^\d+$", "", "7$", "[a-z]+-[0-9]+"],
}  # fmt: skip
FIELDS = ["x", "data.x", "data.a.b", "data.a.b.c", "data.l[0].v", "data.l.0.v", "data.x.y",
          "data.od.b", "data.od.b.c", "data"]  # fmt: skip


def odd_views(value: Any) -> list[dict[str, Any]]:
    """``value`` at every field shape, and views whose intermediates are not plain dicts."""
    from collections import OrderedDict
    from types import MappingProxyType

    full = {"x": value, "data": {"x": value, "a": {"b": value, "c": value},
                                 "l": [{"v": value}], "od": OrderedDict(b={"c": value})}}  # fmt: skip
    return [
        full,
        {"x": value, "data": {"x": value, "a": {"b": {"c": value}}, "od": {"b": value}}},
        {"data": {"a": OrderedDict(b={"c": value}), "l": [], "od": MappingProxyType({"b": 1})}},
        {"data": {"a": [value], "l": {"0": {"v": value}}, "x": {"y": value}}},
        {"data": {"a": "text", "l": "text", "od": None}},
        {"data": [value]},
        {"data": None},
        {},
    ]


def _outcome(route: Callable[..., Any], *args: Any) -> str:
    """What routing did, or the error it raised (both paths must raise alike), as text."""
    try:
        return repr(route(*args))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _generated(table: RouteTable, view: dict[str, Any]) -> tuple[list[int], list[Dispatch]]:
    result = table.route(view, ["g"])
    return result.history[0].matched, result.dispatches


def _reference(
    routers: list[tuple[list[MatchRule], str]], view: dict[str, Any]
) -> tuple[list[int], list[Dispatch]]:
    matched, dispatches = [], []
    for index, (rules, policy) in enumerate(routers):
        results = [compile_match_rule(rule)(view) for rule in rules]
        if not rules or (all(results) if policy == "all" else any(results)):
            matched.append(index)
            if Dispatch("trigger", str(index % 3)) not in dispatches:
                dispatches.append(Dispatch("trigger", str(index % 3)))
    return matched, dispatches


def _table(routers: list[tuple[list[MatchRule], str]]) -> RouteTable:
    docs = [{"kind": "trigger", "trigger": {"triggerId": str(i % 3)},
             "match": {"policy": policy, "rules": [r.model_dump() for r in rules]}}
            for i, (rules, policy) in enumerate(routers)]  # fmt: skip
    first = group("first", [{"kind": "trigger", "trigger": {"triggerId": "1"}}])
    return RouteTable([group("g", docs), first])


@pytest.mark.parametrize("operator", sorted(EXPECTED))
def test_generated_groups_decide_as_the_match_rules(operator: str) -> None:
    for expected in EXPECTED[operator]:
        if match_value_problem(operator, expected) is not None:  # refused at load: never runs
            with pytest.raises(ValidationError, match=f"operator {operator}: "):
                MatchRule.model_validate({"field": "x", "operator": operator, "value": expected})
            continue
        rules = [MatchRule.model_validate({"field": f, "operator": operator, "value": expected})
                 for f in FIELDS]  # fmt: skip
        routers = [([rule], "all") for rule in rules]
        refused = _outcome(compile_match_rule, rules[0])
        if "Error" in refused:  # e.g. an integer too large for a float: refused at compile time
            assert _outcome(_table, routers) == refused
            continue
        table = _table(routers)
        for value in ODD_VALUES:
            for view in odd_views(value):
                generated = _outcome(_generated, table, view)
                reference = _outcome(_reference, routers, view)
                assert generated == reference, (operator, expected, value, view)


def test_generated_groups_combine_rules_and_dedupe_like_the_closures() -> None:
    rules = [MatchRule.model_validate(doc) for doc in (
        {"field": "data.x", "operator": "gte", "value": "3"},
        {"field": "data.x", "operator": "lt", "value": 10},
        {"field": "data.s", "operator": "eq", "value": "critical"},
        {"field": "data.s", "operator": "in", "value": ["ok", "critical"]},
        {"field": "data.flag", "operator": "eq", "value": True},
        {"field": "data.missing", "operator": "exists", "value": False},
    )]  # fmt: skip
    routers = [([], "all")] + [
        (rules[i : i + width], policy)
        for width in (1, 2, 3)
        for i in range(len(rules) - width + 1)
        for policy in ("all", "any")
    ]
    table = _table(routers)
    for x in (2, 3, "3", 9.5, 10, "x", None):
        for s in ("critical", "ok", 3, None):
            for flag in (True, "true", 1):
                view = {"data": {"x": x, "s": s, "flag": flag}}
                result = table.route(view, ["g"])
                matched, dispatches = _reference(routers, view)
                assert (result.history[0].matched, result.dispatches) == (matched, dispatches)
                # what an earlier group dispatched is not dispatched again
                after = table.route(view, ["first", "g"])
                first = Dispatch("trigger", "1")
                assert after.dispatches == [first, *(d for d in dispatches if d != first)]
                assert after.history[1].matched == matched


def test_hostile_route_configuration_is_data_not_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = "x'); __import__('os').system('touch PWNED'); (\"\"\"\n    raise SystemExit\n#"
    key = text.replace(".", "_")  # one key, not a path of several
    subject = re.sub(r"[\s.*>]", "_", text)  # still hostile, and a valid NATS subject
    gid = text.replace("\n", " ")  # still hostile, and an id (no control characters)
    table = RouteTable([
        group(gid, [
            {"kind": "trigger", "trigger": {"triggerId": text}, "match": {"rules": [
                {"field": f"data.{key}", "operator": "eq", "value": text}]}},
            {"kind": "publish", "publish": {"subject": subject}, "match": {"policy": "any", "rules": [
                {"field": f"data.{key}.{key}", "operator": "in", "value": [text]},
                {"field": f"data.{key}", "operator": "regex", "value": "^x'"}]}},
        ])
    ])  # fmt: skip
    source = table._groups[gid].fast.__source__  # type: ignore[attr-defined]
    assert "import" not in source and "PWNED" not in source
    result = table.route({"data": {key: text}}, [gid])
    assert result.dispatches == [Dispatch("trigger", text), Dispatch("publish", subject)]
    assert [record(h) for h in result.history] == [
        hist(gid, 1, evaluated=2, matched=[0, 1], dispatched=["trigger", "publish"])
    ]
    assert table.route({"data": {key: "other"}}, [gid]).dispatches == []
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("eventray.in.p0", "reserved for the platform"),
        ("eventray.triggers", "reserved for the platform"),
        ("$JS.API.STREAM.DELETE.EVENTRAY", "reserved for the platform"),
        ("_INBOX.lane.x", "reserved for the platform"),
        ("alerts.*", "is not a NATS subject"),
        ("alerts..hot", "is not a NATS subject"),
        ("alerts hot", "is not a NATS subject"),
    ],
)
def test_a_publish_route_may_not_write_into_the_platform_s_subjects(
    subject: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        group("g", [{"kind": "publish", "publish": {"subject": subject}}])
    assert group("g", [{"kind": "publish", "publish": {"subject": "acme.alerts.hot"}}])
