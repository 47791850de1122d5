"""Every configuration accepted at load works: what an operator cannot use is refused there.

Each test writes a small tenant (test_catalog's BASE), breaks one thing and reads the refusal
through the loader: the file, the field path and the reason. Patterns are compiled by RE2 at
load (route group match rules, rule literals, business rule parameters); values an operator
can never compare with (a ``between`` with one value, an ``in`` with a text, a date that does
not parse, a time YAML read as a number) are refused rather than never matching.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.errors import ConfigIssue
from tests.unit.test_catalog import issues_of, only_issue, write_tenant


def routes(*rules: str) -> str:
    """The BASE route group with one saving router matching ``rules``."""
    return (
        "kind: RouteGroup\nid: rg\norgId: cust\nname: RG\nrouters:\n"
        "  - kind: save_event\n    match:\n      policy: all\n      rules:\n"
        + "".join(f"        - {rule}\n" for rule in rules)
    )


def condition(operator: str, value: str) -> str:
    """The BASE rule with one condition on ``data.t``; ``value`` is YAML for the operand."""
    return f"""
kind: Rule
id: r1
orgId: cust
parameters: [{{name: threshold, type: number}}, {{name: range, type: text, required: false}},
             {{name: pattern, type: text, required: false}}]
when:
  logic: AND
  items:
    - type: condition
      data: {{field: {{type: event, value: data.t}}, operator: greaterThan,
             value: {{type: variable, value: threshold}}}}
    - type: condition
      data:
        field: {{type: event, value: data.t}}
        operator: {operator}
        value: {value}
"""


def rule_issue(tmp_path: Path, operator: str, value: str) -> ConfigIssue:
    issue = only_issue(write_tenant(tmp_path, rules_yaml=condition(operator, value)), "r1")
    assert (issue.source, issue.kind) == (str(tmp_path / "rules.yaml"), "Rule")
    return issue


# --------------------------------------------------------------------------- route groups


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("'('", "missing ): ("),
        ("'[a-z'", "missing ]: [a-z"),
        ("'(?=x)y'", "lookaround is not supported, patterns run in linear time"),
        ("'(?<!x)y'", "lookaround is not supported"),
        ("'(a)\\1'", "backreferences are not supported"),
        ("'(?P<n>a)(?P=n)'", "backreferences are not supported"),
        ("'end\\Z'", "the end of the text is \\z in RE2 syntax"),
        ("'\\p{L}{1000}'", "pattern too large"),
        ("5", "needs a string pattern, got 5"),
    ],
)
def test_a_route_group_regex_re2_refuses_is_refused_at_load(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    yaml = routes("{field: data.label, operator: eq, value: x}",
                  f"{{field: data.label, operator: regex, value: {pattern}}}")  # fmt: skip
    issue = only_issue(write_tenant(tmp_path, routegroups_yaml=yaml), "rg")
    assert (issue.source, issue.kind, issue.path) == (
        str(tmp_path / "routegroups.yaml"), "RouteGroup", "routers[0].match.rules[1].value",
    )  # fmt: skip
    assert issue.reason.startswith("operator regex: "), issue.reason
    assert reason in issue.reason, issue.reason


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("{field: data.t, operator: in, value: hot}", "operator in: needs a list value, got 'hot'"),
        ("{field: data.t, operator: nin}", "operator nin: needs a list value, got None"),
        ("{field: data.t, operator: gt, value: [1, 2]}",
         "operator gt: needs a finite number or a text, got [1, 2]"),
        ("{field: data.t, operator: lte, value: .nan}",
         "operator lte: needs a finite number or a text, got nan"),
        ("{field: data.t, operator: exists, value: 'no'}",
         "operator exists: takes true, false or nothing, got 'no'"),
    ],
)  # fmt: skip
def test_a_route_group_value_its_operator_cannot_use_is_refused(
    tmp_path: Path, rule: str, reason: str
) -> None:
    issue = only_issue(write_tenant(tmp_path, routegroups_yaml=routes(rule)), "rg")
    assert (issue.path, issue.reason) == ("routers[0].match.rules[0].value", reason)


def test_a_valid_route_group_regex_loads_and_routes(tmp_path: Path) -> None:
    yaml = routes("{field: data.label, operator: regex, value: '^freezer-\\d+$'}")
    table = load_catalog([write_tenant(tmp_path, routegroups_yaml=yaml)]).route_table()
    assert table.route({"data": {"label": "freezer-07"}}, ["rg"]).has("save_event")
    assert not table.route({"data": {"label": "freezer-07b"}}, ["rg"]).has("save_event")


# --------------------------------------------------------------------------- rule literals


def test_a_rule_regex_re2_refuses_is_refused_at_load(tmp_path: Path) -> None:
    issue = rule_issue(tmp_path, "regex", "{type: literal, value: '^(?!test)'}")
    assert issue.path == "when.items[1].data.value"
    assert issue.reason == (
        "operator regex: invalid pattern '^(?!test)': invalid perl operator: (?!: lookaround "
        "is not supported, patterns run in linear time (RE2 syntax)"
    )
    assert str(issue) == (  # line 17, column 9: the "value:" key of the second condition
        f"{tmp_path / 'rules.yaml'}:17:9 [Rule r1] at when.items[1].data.value: {issue.reason}"
    )


@pytest.mark.parametrize(
    ("operator", "value", "reason"),
    [
        ("between", "{type: literal, value: 5}", "needs two values (low, high), got 5"),
        ("between", "{type: literal, value: [1, 2, 3]}", "needs two values (low, high), got [1, 2, 3]"),
        ("between", "[{type: literal, value: 1}, {type: literal, value: high}]",
         "the high value needs a finite number, got 'high'"),
        ("betweenDate", "{type: literal, value: [2026-01-01T00:00:00Z, soon]}",
         "the high value needs a date (ISO-8601 text such as '2026-01-31T08:00:00Z', or epoch "
         "seconds or ms), got 'soon'"),
        ("beforeDate", "{type: literal, value: 2026-01-31}",
         "needs a date (ISO-8601 text such as '2026-01-31T08:00:00Z', or epoch seconds or ms), "
         "got datetime.date(2026, 1, 31) (YAML read an unquoted date: quote it, or write a full "
         "timestamp)"),
        ("betweenTime", "[{type: literal, value: 22:00}, {type: literal, value: '06:00'}]",
         "the low value needs a time of day ('HH:MM' or 'HH:MM:SS' text, quoted in YAML), got "
         "1320 (YAML reads an unquoted 22:00 as the number 1320: quote times)"),
        ("afterTime", "{type: literal, value: '25:00'}",
         "needs a time of day ('HH:MM' or 'HH:MM:SS' text, quoted in YAML), got '25:00'"),
        ("betweenTime", "{type: now}", "needs two values (low, high), got now"),
        ("in", "{type: literal, value: hot}", "needs a list value, got 'hot'"),
        ("notIn", "{type: now}", "needs a list value, got now"),
        ("greaterThan", "{type: literal, value: warm}", "needs a finite number, got 'warm'"),
        ("olderThanSeconds", "{type: literal, value: true}", "needs a finite number, got True"),
        ("startsWith", "{type: literal, value: 7}", "needs text, got 7"),
        ("regex", "{type: literal, value: null}", "needs a string pattern, got None"),
        ("afterDate", "[{type: now}, {type: event, value: data.u}]",
         "takes one value, not a list (lists are for between, betweenDate, betweenTime, in and "
         "notIn)"),
    ],
)  # fmt: skip
def test_a_rule_value_its_operator_cannot_use_is_refused_at_load(
    tmp_path: Path, operator: str, value: str, reason: str
) -> None:
    issue = rule_issue(tmp_path, operator, value)
    assert (issue.path, issue.reason) == (
        "when.items[1].data.value",
        f"operator {operator}: {reason}",
    )


def test_a_list_of_one_value_is_refused_at_load(tmp_path: Path) -> None:
    issue = rule_issue(tmp_path, "between", "[{type: literal, value: 1}]")
    assert (issue.path, issue.reason) == (
        "when.items[1].data",
        "a list of values must have exactly two items (low, high)",
    )


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("between", "{type: literal, value: [1, '2.5']}"),
        ("between", "[{type: literal, value: 1}, {type: event, value: data.max}]"),
        ("between", "{type: event, value: data.range}"),  # known per event only
        ("betweenDate", "[{type: literal, value: '2026-01-01'}, {type: now}]"),
        ("betweenTime", "{type: literal, value: ['22:00', '06:00']}"),
        ("beforeDate", "{type: literal, value: 2026-01-31T08:00:00Z}"),  # a YAML timestamp
        ("beforeDate", "{type: literal, value: 1767225600}"),  # epoch seconds
        ("afterTime", "{type: now}"),
        ("in", "{type: literal, value: [1, hot]}"),
        ("in", "[{type: literal, value: 1}, {type: event, value: data.u}]"),
        ("regex", "{type: literal, value: '^t-\\d+$'}"),
        ("regex", "{type: state, value: pattern}"),
        ("equals", "{type: literal, value: [1, 2]}"),
    ],
)
def test_values_the_operators_can_use_load(tmp_path: Path, operator: str, value: str) -> None:
    text = condition(operator, value).replace(
        "parameters:", "variables: [{name: pattern, type: text}]\nparameters:"
    )
    load_catalog([write_tenant(tmp_path, rules_yaml=text)])


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("operator", "value", "parameters", "name", "reason"),
    [
        ("between", "{type: variable, value: range}", "{threshold: 5, range: 7}", "range",
         "needs two values (low, high), got 7"),
        ("between", "[{type: literal, value: 0}, {type: variable, value: range}]",
         "{threshold: 5, range: hot}", "range", "the high value needs a finite number, got 'hot'"),
        ("regex", "{type: variable, value: pattern}", "{threshold: 5, pattern: '(a)\\1'}",
         "pattern", "invalid pattern '(a)\\\\1': invalid escape sequence: \\1: backreferences "
         "are not supported, patterns run in linear time (RE2 syntax)"),
        ("in", "{type: variable, value: range}", "{threshold: 5, range: a}", "range",
         "needs a list value, got 'a'"),
    ],
)  # fmt: skip
def test_a_parameter_its_operator_cannot_use_refuses_the_business_rule(
    tmp_path: Path, operator: str, value: str, parameters: str, name: str, reason: str
) -> None:
    br = f"{{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust, parameters: {parameters}}}"
    root = write_tenant(tmp_path, rules_yaml=condition(operator, value), businessrules_yaml=br)
    issue = only_issue(root, "br1")
    assert (issue.source, issue.kind, issue.path) == (
        str(tmp_path / "businessrules.yaml"), "BusinessRule", f"parameters.{name}",
    )  # fmt: skip
    assert issue.reason == (
        f"parameter {name!r} of rule 'r1', used by when.items[1].data (operator {operator}): "
        f"{reason}"
    )


def test_a_parameter_left_unset_is_not_refused(tmp_path: Path) -> None:
    # Not given and without a default: the condition reads it as missing (false), as ever.
    root = write_tenant(tmp_path, rules_yaml=condition("between", "{type: variable, value: range}"))
    assert load_catalog([root]).business_rules["br1"].parameters == {"threshold": 5}


def test_every_refusal_of_a_directory_is_reported_at_once(tmp_path: Path) -> None:
    br = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust, parameters: {threshold: 5}}"
    root = write_tenant(
        tmp_path,
        routegroups_yaml=routes("{field: data.label, operator: regex, value: '(?<=a)b'}"),
        rules_yaml=condition("between", "{type: literal, value: 5}"),
        businessrules_yaml=br,
    )
    found = {(Path(i.source).name, i.path) for i in issues_of(root)}
    assert {("routegroups.yaml", "routers[0].match.rules[0].value"),
            ("rules.yaml", "when.items[1].data.value")} <= found  # fmt: skip


@pytest.mark.parametrize(
    ("entity_id", "reason"),
    [
        ('"a/b"', "an id must not contain '/' (it is one segment of API URLs)"),
        ('" a2"', "an id must not start or end with whitespace"),
        ('""', "an id must not be empty"),
        ('"a\\u0007"', "an id must not contain control character '\\x07'"),
        ('"' + "x" * 201 + '"', "an id has at most 200 characters"),
    ],
)
def test_an_id_that_is_not_one_url_segment_is_refused_at_load(
    tmp_path: Path, entity_id: str, reason: str
) -> None:
    assets = (
        f"{{kind: Asset, id: {entity_id}, orgId: cust, assetUUID: U2, name: A2, "
        "templateId: tpl, routeGroupIds: [rg]}\n"
    )
    issues = issues_of(write_tenant(tmp_path, assets_yaml=assets))
    assert [(i.path, i.reason) for i in issues] == [("id", reason)], issues
