"""Tenant patterns run by RE2 (pipeline/patterns.py): linear time, refusals with reasons.

The patterns below make Python's ``re`` backtrack exponentially: on these texts it would not
finish within the test's timeout. With RE2 each search takes milliseconds, on the route group
path (generated and reference) and the rule path (generated and reference) alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.routing import MatchRule, RouteGroup
from eventray.pipeline.patterns import Pattern, PatternError, cached_pattern, compile_pattern
from eventray.pipeline.routing import RouteTable, compile_match_rule
from eventray.pipeline.rules.operators import pattern
from tests.unit.rulekit import business_rule, engine, event, rule

EVIL = ["(a+)+$", "(a|aa)+$", "(a*)*b", "^(\\w+\\s?)*$", "(x+x+)+y", "(.*a){12}"]
LONG = "a" * 50_000 + "!"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


@pytest.mark.parametrize("source", EVIL)
def test_catastrophic_patterns_search_in_linear_time(source: str) -> None:
    compiled = compile_pattern(source)
    found, seconds = timed(lambda: compiled.search(LONG))
    assert found is (source == "(.*a){12}")  # twelve a's are there, the rest cannot match
    assert seconds < 0.5, seconds
    _, doubled = timed(lambda: compiled.search(LONG * 2))
    assert doubled < 1.0, doubled  # twice the text, about twice the time: no blow-up


def test_search_is_a_search_not_a_full_match() -> None:
    assert compile_pattern("ez").search("freezer") is True
    assert compile_pattern("^ez").search("freezer") is False
    assert compile_pattern("^freezer-\\d+$").search("freezer-07") is True
    assert compile_pattern("^freezer-\\d+$").search("freezer-07\n") is False  # $ is the end
    assert compile_pattern("(?i)FREEZER").search("freezer") is True
    assert compile_pattern("(?P<n>\\d+)").search("n=3") is True  # named groups are fine
    assert compile_pattern("").search("") is True


def test_text_is_unicode() -> None:
    assert compile_pattern("^caf.$").search("café") is True  # one character, two bytes
    assert compile_pattern("\\pL+").search("ñandú") is True
    assert compile_pattern("é").search("cafe") is False
    assert compile_pattern(".").search("\ud800") is True  # a lone surrogate does not raise
    assert compile_pattern("a\x00b").search("xa\x00b") is True


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("(", "missing ): ( (RE2 syntax)"),
        ("(?=a)", "invalid perl operator: (?=: lookaround is not supported, patterns run in "
                  "linear time (RE2 syntax)"),
        ("(?<=a)b", "invalid perl operator: (?<=: lookaround is not supported, patterns run "
                    "in linear time (RE2 syntax)"),
        ("(a)\\1", "invalid escape sequence: \\1: backreferences are not supported, patterns "
                   "run in linear time (RE2 syntax)"),
        ("\\Z", "invalid escape sequence: \\Z: the end of the text is \\z in RE2 syntax"),
        ("a{1001}", "invalid repetition size: {1001} (RE2 syntax)"),
        ("[\\p{L}]{999}", "pattern too large: over 1024 KiB compiled (RE2)"),
    ],
)  # fmt: skip
def test_patterns_re2_refuses_carry_the_reason(source: str, reason: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(source)
    assert str(info.value) == reason


def test_a_pattern_is_text() -> None:
    with pytest.raises(PatternError, match="a pattern is text, not int"):
        Pattern(5)  # type: ignore[arg-type]


def test_patterns_known_only_per_event_are_cached_within_a_bound() -> None:
    assert cached_pattern("^a") is cached_pattern("^a")
    info = cached_pattern.cache_info()
    assert info.maxsize is not None and info.maxsize <= 256
    with pytest.raises(RuleError, match="invalid regex '\\(': missing \\)"):
        pattern("(")


# --------------------------------------------------------------------------- on the paths


def test_a_route_group_regex_on_a_long_field_routes_fast() -> None:
    group = RouteGroup.model_validate({
        "kind": "RouteGroup", "id": "g", "orgId": "o", "name": "g", "routers": [
            {"kind": "save_event", "match": {"rules": [
                {"field": "data.label", "operator": "regex", "value": source}
                for source in EVIL[:3]], "policy": "any"}}]},
    )  # fmt: skip
    table = RouteTable([group])
    for view in ({"data": {"label": LONG}}, _NotADict({"data": {"label": LONG}})):
        result, seconds = timed(lambda view=view: table.route(view, ["g"]))  # type: ignore[misc]
        assert not result.has("save_event") and seconds < 1.0, seconds
    numbers = MatchRule.model_validate({"field": "n", "operator": "regex", "value": "^3\\.5$"})
    assert compile_match_rule(numbers)({"n": 3.5}) is True  # numbers match as their text


class _NotADict(dict[str, Any]):
    """A view that is not exactly a dict: routed by the reference closures."""


@pytest.mark.parametrize("reference", [False, True])
def test_a_rule_regex_on_a_long_field_evaluates_fast(reference: bool) -> None:
    r = rule("""
kind: Rule
id: evil
orgId: acme
variables: [{name: pattern, type: text, default: "(a|aa)+$"}]
when:
  logic: OR
  items:
    - type: condition
      data: {field: {type: event, value: data.text}, operator: regex,
             value: {type: literal, value: "(a+)+$"}}
    - type: condition
      data: {field: {type: event, value: data.text}, operator: regex,
             value: {type: state, value: pattern}}
    - type: condition
      data: {field: {type: event, value: data.text}, operator: regex,
             value: {type: event, value: data.pattern}}
""")
    br = business_rule("{kind: BusinessRule, id: br, ruleId: evil, orgId: factory-alpha}")
    eng, _, _ = engine([r], [br], ManualClock(), reference=reference)
    batch = [event({"text": LONG, "pattern": "(x+x+)+y"}) for _ in range(3)]
    out, seconds = timed(lambda: eng.evaluate(batch))
    assert [(e.matched, e.error) for e in out.evaluations] == [(False, None)] * 3
    assert seconds < 2.0, seconds
    refused = eng.evaluate([event({"text": "aa", "pattern": "(a)\\1"})]).evaluations[0]
    assert refused.error is not None and "backreferences are not supported" in refused.error
