"""Filter expressions (pipeline/storage/where.py), their resolution through templates and rules
(pipeline/storage/fields.py) and the planners' scope checks (pipeline/storage/reading.py).

The catalog: a vendor with two sibling tenants whose templates disagree on purpose: tenant A
keeps Temperature under id 1 and Humidity under id 2, tenant B the other way round, and
tenant B's Status is a number where tenant A's is text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import ConfigIssue, InvalidQuery, UnknownOrganization
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.storage.fields import (
    normalise_name,
    resolve_capture_filters,
    resolve_eva_filters,
)
from eventray.pipeline.storage.query import EvaAlternative, NamedEvaFilter, build_event_query
from eventray.pipeline.storage.reading import plan_event_query, plan_log_query
from eventray.pipeline.storage.scope import Scope
from eventray.pipeline.storage.where import convert, infer_kind, parse_where

EVIL = "x' OR 1=1 -- \\'; DROP TABLE events"


def _template(tid: str, org: str, fields: list[tuple[int, str, str, str]]) -> dict[str, Any]:
    return {
        "kind": "AssetTemplate", "id": tid, "orgId": org, "name": tid, "shared": True,
        "scriptConversion": "result = payload;",
        "dynamicFields": [{"fieldId": i, "field": f, "value": v, "type": t} for i, f, v, t in fields],
    }  # fmt: skip


DOCUMENTS: list[dict[str, Any]] = [
    {"kind": "Organization", "id": "vendor", "name": "V", "type": "vendor"},
    {"kind": "Organization", "id": "tenant-a", "name": "A", "type": "customer", "parentId": "vendor"},
    {"kind": "Organization", "id": "site-a", "name": "A1", "type": "site", "parentId": "tenant-a"},
    {"kind": "Organization", "id": "tenant-b", "name": "B", "type": "customer", "parentId": "vendor"},
    _template("tpl-a", "tenant-a", [
        (1, "Temperature", "data.temperature", "number"), (2, "Humidity", "data.humidity", "number"),
        (3, "Door open", "data.doorOpen", "bool"), (4, "Status", "data.status", "string"),
        (5, "Reading time", "created", "date"), (6, "Position", "data.gps", "geo"),
    ]),
    _template("tpl-b", "tenant-b", [
        (2, "Temperature", "data.t", "number"), (1, "Humidity", "data.rh", "number"),
        (4, "Status", "data.code", "number"),
    ]),
    {"kind": "RouteGroup", "id": "rg-a", "orgId": "tenant-a", "name": "a", "version": 1,
     "routers": [{"kind": "save_event"}, {"kind": "rules"}]},
    {"kind": "RouteGroup", "id": "rg-b", "orgId": "tenant-b", "name": "b", "version": 1,
     "routers": [{"kind": "save_event"}]},
    {"kind": "Asset", "id": "dev-a", "orgId": "site-a", "assetUUID": "A1", "name": "a",
     "templateId": "tpl-a", "routeGroupIds": ["rg-a"]},
    {"kind": "Asset", "id": "dev-b", "orgId": "tenant-b", "assetUUID": "B1", "name": "b",
     "templateId": "tpl-b", "routeGroupIds": ["rg-b"]},
    {"kind": "Rule", "id": "hot-a", "orgId": "tenant-a",
     "captureFields": [{"name": "temperature", "type": "number"}, {"name": "note", "type": "text"}],
     "actions": [{"id": "audit", "type": "log", "captures": {
         "temperature": {"type": "event", "value": "data.temperature"},
         "note": {"type": "literal", "value": "hot"}}}],
     "when": {"logic": "AND", "actions": ["audit"], "items": [{"type": "condition", "data": {
         "field": {"type": "event", "value": "data.temperature"}, "operator": "exists"}}]}},
    {"kind": "Rule", "id": "hot-b", "orgId": "tenant-b",
     "captureFields": [{"name": "temperature", "type": "text"}],
     "actions": [{"id": "audit", "type": "log", "captures": {
         "temperature": {"type": "event", "value": "data.t"}}}],
     "when": {"logic": "AND", "actions": ["audit"], "items": [{"type": "condition", "data": {
         "field": {"type": "event", "value": "data.t"}, "operator": "exists"}}]}},
    {"kind": "BusinessRule", "id": "br-a", "ruleId": "hot-a", "orgId": "tenant-a",
     "includeChildren": True},
    {"kind": "BusinessRule", "id": "br-b", "ruleId": "hot-b", "orgId": "tenant-b"},
]  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    issues: list[ConfigIssue] = []
    entities = [entity_from_dict("test", d, issues) for d in DOCUMENTS]
    assert not issues, issues
    return build_catalog([("test", e) for e in entities if e is not None], compile_scripts=False)


def scope_of(catalog: Catalog, org: str) -> Scope:
    return Scope.of_org(catalog, org)


# -- the expression parser -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "field_id", "op", "value", "quoted"),
    [
        ("temperature > -15", "temperature", None, "gt", "-15", False),
        ("temperature>-15", "temperature", None, "gt", "-15", False),
        ("  temperature   >=   -15.5  ", "temperature", None, "gte", "-15.5", False),
        ("status = critical", "status", None, "eq", "critical", False),
        ("status != 'on hold'", "status", None, "neq", "on hold", True),
        ('status = "0042"', "status", None, "eq", "0042", True),
        ('"Door open" = true', "Door open", None, "eq", "true", False),
        ("data.doorOpen = false", "data.doorOpen", None, "eq", "false", False),
        ("#4 <= 7", "", 4, "lte", "7", False),
        ("created < 2026-03-01T08:00:00Z", "created", None, "lt", "2026-03-01T08:00:00Z", False),
        ('note = ""', "note", None, "eq", "", True),
        ("note = a = b", "note", None, "eq", "a = b", False),  # the value is the rest
        (f"note = {EVIL}", "note", None, "eq", EVIL, False),
    ],
)
def test_expressions_parse(
    text: str, name: str, field_id: int | None, op: str, value: str, quoted: bool
) -> None:
    parsed = parse_where(text)
    assert (parsed.name, parsed.field_id, parsed.op, parsed.text, parsed.quoted) == (
        name, field_id, op, value, quoted,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'field op value'"),
        ("> 5", "expected 'field op value'"),
        ("temperature", r"expected an operator \(= != > >= < <=\) after 'temperature'"),
        ("temperature =~ 5", "unknown operator '=~'"),
        ("temperature == 5", "unknown operator '=='"),
        ("temperature <> 5", "unknown operator '<>'"),
        ("status like crit%", "unknown operator 'like'"),
        ("status in a,b", "unknown operator 'in'"),
        ("temperature >", "no value after '>'"),
        ("#70000 = 1", "field id must be 0..65535"),
        ("x = " + "y" * 1000, "longer than 1000 characters"),
    ],
)
def test_malformed_expressions_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message) as refused:
        parse_where(text, param="where[2]")
    assert refused.value.param == "where[2]"


def test_values_convert_to_the_field_type_or_are_refused() -> None:
    assert convert(parse_where("t > -15"), "number") == -15.0
    assert convert(parse_where("t > 1e3"), "number") == 1000.0
    assert convert(parse_where("d = TRUE"), "bool") is True
    assert convert(parse_where("d != 0"), "bool") is False
    assert convert(parse_where("c >= 2026-03-01"), "date") == datetime(2026, 3, 1, tzinfo=UTC)
    assert convert(parse_where("c < 2026-03-01T09:00:00+01:00"), "date") == datetime(
        2026, 3, 1, 9, tzinfo=timezone(timedelta(hours=1))
    )
    assert convert(parse_where('s = "-15"'), "string") == "-15"
    for text, kind, message in [
        ("t > warm", "number", "'warm' is not a number"),
        ("t > nan", "number", "'nan' is not a number"),
        ("t > inf", "number", "'inf' is not a number"),
        ("d = yes", "bool", "'yes' is not a boolean"),
        ("d > true", "bool", "a boolean field takes = or != only"),
        ("c > yesterday", "date", "'yesterday' is not an ISO-8601 date"),
    ]:
        with pytest.raises(InvalidQuery, match=message):
            convert(parse_where(text), kind)  # type: ignore[arg-type]


def test_an_undeclared_value_reads_as_what_it_looks_like() -> None:
    kinds = {t: infer_kind(parse_where(f"#9 = {t}")) for t in
             ("-15", "true", "2026-03-01", "2026-03-01T08:00:00Z", "critical", '"12"', "2026-13-01")}  # fmt: skip
    assert kinds == {
        "-15": "number", "true": "bool", "2026-03-01": "date", "2026-03-01T08:00:00Z": "date",
        "critical": "string", '"12"': "string", "2026-13-01": "string",
    }  # fmt: skip


# -- names through the templates -----------------------------------------------------------


def test_names_match_display_names_loosely_then_value_paths(catalog: Catalog) -> None:
    [tpl_a] = [catalog.templates["tpl-a"]]
    assert normalise_name("Door open") == normalise_name("door_open") == "dooropen"
    for name in ("temperature", "TEMPERATURE", '"Temperature"', "data.temperature"):
        _, [named] = resolve_eva_filters([f"{name} > -15"], [tpl_a])
        assert named.alternatives == (EvaAlternative(("tpl-a",), 1, -15.0),), name
    for name in ("doorOpen", "door_open", '"Door open"', "data.doorOpen", "DOOR-OPEN"):
        _, [named] = resolve_eva_filters([f"{name} = true"], [tpl_a])
        assert named.alternatives == (EvaAlternative(("tpl-a",), 3, True),), name
    _, [when] = resolve_eva_filters(["readingTime >= 2026-03-01"], [tpl_a])
    assert when.alternatives[0].value == datetime(2026, 3, 1, tzinfo=UTC)
    _, [status] = resolve_eva_filters(["status = critical"], [tpl_a])
    assert status == NamedEvaFilter("status", "eq", (EvaAlternative(("tpl-a",), 4, "critical"),))


def test_one_name_under_different_ids_is_an_or_restricted_to_each_template(
    catalog: Catalog,
) -> None:
    templates = [catalog.templates["tpl-a"], catalog.templates["tpl-b"]]
    _, [named] = resolve_eva_filters(["temperature > -15"], templates)
    assert named.alternatives == (
        EvaAlternative(("tpl-a",), 1, -15.0),
        EvaAlternative(("tpl-b",), 2, -15.0),
    )
    sql, params = build_event_query(plan_event_query(catalog, Scope.platform(),
                                                     where=["temperature > -15"]))  # fmt: skip
    assert sql.splitlines()[1] == (
        "WHERE ((template_id IN {name0_0_templates:Array(String)} "
        "AND mapContains(eva_number, {name0_0_field:UInt16}) "
        "AND eva_number[{name0_0_field:UInt16}] > {name0_0_value:Float64}) OR "
        "(template_id IN {name0_1_templates:Array(String)} "
        "AND mapContains(eva_number, {name0_1_field:UInt16}) "
        "AND eva_number[{name0_1_field:UInt16}] > {name0_1_value:Float64}))"
    )
    assert params == {
        "name0_0_templates": ["tpl-a"], "name0_0_field": 1, "name0_0_value": -15.0,
        "name0_1_templates": ["tpl-b"], "name0_1_field": 2, "name0_1_value": -15.0, "limit": 101,
    }  # fmt: skip


def test_one_name_of_different_types_is_refused_unless_the_scope_narrows_it(
    catalog: Catalog,
) -> None:
    with pytest.raises(InvalidQuery, match=r"'status' has different types in the templates in "
                       r"scope \(#4 number in tpl-b; #4 string in tpl-a\); narrow"):  # fmt: skip
        plan_event_query(catalog, Scope.platform(), where=["status = critical"])
    # Tenant A's scope sees only its template: the same expression is fine there.
    query = plan_event_query(catalog, scope_of(catalog, "tenant-a"), where=["status = critical"])
    assert query.named[0].alternatives == (EvaAlternative(("tpl-a",), 4, "critical"),)
    # And an organization filter narrows the platform's view the same way.
    query = plan_event_query(catalog, Scope.platform(), org_id="tenant-b", where=["status > 3"])
    assert query.named[0].alternatives == (EvaAlternative(("tpl-b",), 4, 3.0),)


def test_unknown_fields_and_type_mismatches_name_what_is_wrong(catalog: Catalog) -> None:
    tenant_a = scope_of(catalog, "tenant-a")
    cases = [
        (["pressure > 3"], "where[0]", r"unknown field 'pressure'; the templates in scope have: "
                                       r"Door open, Humidity, Position, Reading time, Status, Temperature"),
        (["temperature > -15", "temperature > warm"], "where[1]", "'warm' is not a number"),
        (["doorOpen > true"], "where[0]", "a boolean field takes = or != only"),
        (["position > 1,2"], "where[0]", "a geo field takes = or != only"),
        (["readingTime > soon"], "where[0]", "is not an ISO-8601 date"),
        (["#3 = maybe"], "where[0]", "'maybe' is not a boolean"),
    ]  # fmt: skip
    for where, param, message in cases:
        with pytest.raises(InvalidQuery, match=message) as refused:
            plan_event_query(catalog, tenant_a, where=where)
        assert refused.value.param == param
    # Tenant B's templates are not listed to tenant A (nor are its field names).
    with pytest.raises(InvalidQuery) as refused:
        plan_event_query(catalog, scope_of(catalog, "tenant-b"), where=["doorOpen = true"])
    assert "Door open" not in str(refused.value) and "Humidity, Status, Temperature" in str(
        refused.value
    )


def test_field_ids_take_the_declared_type_or_the_value_s(catalog: Catalog) -> None:
    tenant_a = scope_of(catalog, "tenant-a")
    assert plan_event_query(catalog, tenant_a, where=["#4 = 12"]).eva == ((4, "eq", "12"),)
    assert plan_event_query(catalog, tenant_a, where=["#3 = true"]).eva == ((3, "eq", True),)
    assert plan_event_query(catalog, tenant_a, where=["#6 = 1.5,2"]).eva == ((6, "eq", "1.5,2"),)
    assert plan_event_query(catalog, tenant_a, where=["#99 >= 7"]).eva == ((99, "gte", 7.0),)
    with pytest.raises(InvalidQuery, match=r"field #4 has different types"):
        plan_event_query(catalog, Scope.platform(), where=["#4 = 12"])


def test_capture_filters_are_typed_by_the_rules_in_view(catalog: Catalog) -> None:
    rule_a = catalog.rules["hot-a"]
    [found] = resolve_capture_filters(["temperature > -15"], [rule_a])
    assert (found.name, found.op, found.rule_ids, found.value) == (
        "temperature", "gt", ("hot-a",), -15.0,
    )  # fmt: skip
    query = plan_log_query(catalog, scope_of(catalog, "site-a"), "captures",
                           where=["note = hot"])  # fmt: skip  # br-a is deployed above site-a
    assert query.captures[0].rule_ids == ("hot-a",) and query.captures[0].value == "hot"
    with pytest.raises(InvalidQuery, match=r"capture field 'temperature' has different types"):
        plan_log_query(catalog, Scope.platform(), "captures", where=["temperature > 1"])
    with pytest.raises(InvalidQuery, match=r"unknown capture field 'nope'; the rules in scope "
                       r"capture: temperature$"):  # fmt: skip
        plan_log_query(catalog, scope_of(catalog, "tenant-b"), "captures", where=["nope = 1"])
    with pytest.raises(InvalidQuery, match="capture fields are named, not numbered"):
        resolve_capture_filters(["#1 = 2"], [rule_a])
    with pytest.raises(InvalidQuery, match=r"field filters \(where\) apply to captures only"):
        plan_log_query(catalog, Scope.platform(), "rules", where=["temperature > 1"])


# -- scope -----------------------------------------------------------------------------------


def test_an_organization_outside_the_scope_reads_as_unknown(catalog: Catalog) -> None:
    tenant_a = scope_of(catalog, "tenant-a")
    messages = []
    for org in ("tenant-b", "no-such-org", "vendor"):
        for plan in (
            lambda o: plan_event_query(catalog, tenant_a, org_id=o),
            lambda o: plan_log_query(catalog, tenant_a, "dlq", org_id=o, include_children=True),
        ):
            with pytest.raises(UnknownOrganization) as refused:
                plan(org)
            messages.append(str(refused.value).replace(org, "<org>"))
            assert refused.value.param == "org"
    assert set(messages) == {"unknown organization '<org>'"}  # no difference to learn from
    inside = plan_event_query(catalog, tenant_a, org_id="site-a", include_children=True)
    assert (inside.org_id, inside.path_key, inside.scope) == ("site-a", "0001/0001/0001", tenant_a)


def test_scopes_are_path_keys_or_the_platform(catalog: Catalog) -> None:
    assert Scope.of_org(catalog, "tenant-b") == Scope("0001/0002")
    assert Scope.platform().condition() == ("", {})
    assert Scope("0001/0002").condition() == (
        "(path_key = {scope_path:String} OR startsWith(path_key, {scope_prefix:String}))",
        {"scope_path": "0001/0002", "scope_prefix": "0001/0002/"},
    )
    assert Scope("0001").contains("0001/0002/0003") and Scope("0001").contains("0001")
    assert not Scope("0001/0001").contains("0001/00010") and not Scope("0001/0001").contains("")
    for bad in ("", "0001/", "/0001", "1", "0001/x", EVIL):
        with pytest.raises(InvalidQuery, match="not a pathKey"):
            Scope(bad)
    with pytest.raises(UnknownOrganization):
        Scope.of_org(catalog, "nobody")


def test_log_filters_a_table_does_not_have_are_refused(catalog: Catalog) -> None:
    root = Scope.platform()
    for kind, filters, message in [
        ("triggers", {"asset_id": "a"}, r"triggers cannot be filtered by asset_id; filters: "
                                        r"business_rule_id, action_id, trigger_id, success, errored"),
        ("rules", {"success": True}, "rules cannot be filtered by success"),
        ("routers", {"matched": True}, "routers cannot be filtered by matched"),
        ("dlq", {"trigger_id": "x"}, "dlq cannot be filtered by trigger_id"),
        ("raw", {"errored": True}, "raw has no error to filter by"),
        ("captures", {"stage": "decode"}, "captures cannot be filtered by stage"),
    ]:  # fmt: skip
        with pytest.raises(InvalidQuery, match=message):
            plan_log_query(catalog, root, kind, **filters)
    with pytest.raises(InvalidQuery, match="unknown log kind 'events'"):
        plan_log_query(catalog, root, "events")
    with pytest.raises(InvalidQuery, match="children needs an organization"):
        plan_log_query(catalog, root, "dlq", include_children=True)
