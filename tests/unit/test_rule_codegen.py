"""The generated rule evaluators (rulegen.py over codegen.py) against the closure tree.

The closure tree is the reference semantics; both generated functions, untraced and traced,
must produce the same evaluations, state changes, writes and errors for every operator and
every kind of operand, over values of every JSON type plus the awkward ones: numeric strings,
bools, NaN, integers too large for a float, dates, missing fields; the traced one must also
build the same trace tree (compared as text: key order and NaN included).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import re2
from pydantic import ValidationError

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import RuleError
from eventray.pipeline.models import BusinessRule, Rule
from eventray.pipeline.models.rule import OPERATORS
from eventray.pipeline.paths import MISSING, parse_path
from eventray.pipeline.rules.codegen import Source
from eventray.pipeline.rules.compiler import compile_business_rule
from eventray.pipeline.rules.engine import RuleEngine, RuleSet, state_key
from eventray.pipeline.rules.operands import NOW as NOW_OPERAND
from eventray.pipeline.rules.operands import PAIR_OPERATORS, UNKNOWN, right_problem
from eventray.pipeline.rules.operators import OPERATOR_FUNCTIONS
from eventray.pipeline.rules.outcome import Evaluation, RuleInput
from eventray.pipeline.rules.rulegen import ENV_OPERATORS
from tests.unit import test_rule_engine as engine_tests
from tests.unit import test_rules_patterns as patterns
from tests.unit.rulekit import ORG_PATHS, engine, event

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

# Every JSON type and the edge cases of loose equality, numeric coercion, dates and times.
VALUES: list[Any] = [
    MISSING, None, True, False, 0, 1, -1, 3, 3.0, 2.5, -0.0, 1e20, 2**53 + 1, float("nan"),
    float("inf"), 10**400, "3", "3.0", "2.5", " 3 ", "1e3", "-1", "", "abc", "critical",
    "CRITICAL", "true", "False", "nan", "2026-01-15T11:55:00Z", "2026-01-01T10:00:00",
    "2026-06-01", "12:00", "22:00:30", "25:00", 1_767_225_600, 1_767_225_600_000, [], [1, 2],
    [10, 20], ["a", "b"], ["3", 3], [True], {"a": 1}, {"zer": 1}, "a", "zer", "freezer-07",
    "^c.*l$", "(", "[0-9]+",
]  # fmt: skip
# A smaller pool for the operand pairs that need a batch per pair.
SMALL: list[Any] = [
    MISSING, None, True, False, 0, 3, 3.0, 2.5, float("nan"), 10**400, "3", "3.0", "abc",
    "critical", "true", "", "2026-01-15T11:55:00Z", "12:00", 1_767_225_600, [10, 20], ["a", "b"],
    {"a": 1}, "a",
]  # fmt: skip

EVENT_X = {"type": "event", "value": "data.x"}
EVENT_Y = {"type": "event", "value": "data.y"}
STATE_S = {"type": "state", "value": "s"}


def data(**fields: Any) -> dict[str, Any]:
    """Event data without the fields given as MISSING."""
    return {k: v for k, v in fields.items() if v is not MISSING}


def probe(rule_id: str, operator: str, left: dict[str, Any], right: Any, **extra: Any) -> Rule:
    """One condition, with a state action attached so that a true condition has an effect."""
    doc = {
        "kind": "Rule", "id": rule_id, "orgId": "acme",
        "parameters": [{"name": "p", "type": "text", "required": False}],
        "variables": [{"name": "n", "type": "number"}, {"name": "s", "type": "text"}],
        "actions": [{"id": "hit", "type": "state", "op": "increment", "variable": "n"}],
        "when": {"logic": "AND", "items": [{"type": "condition", "data": {
            "field": left, "operator": operator, "value": right, "actions": ["hit"]}}]},
        **extra,
    }  # fmt: skip
    return Rule.model_validate(doc)


def bound(rule_id: str, br_id: str, **extra: Any) -> BusinessRule:
    doc = {"kind": "BusinessRule", "id": br_id, "ruleId": rule_id, "orgId": "factory-alpha",
           **extra}  # fmt: skip
    return BusinessRule.model_validate(doc)


def seeded(br_id: str, var: str, value: Any) -> dict[str, Any]:
    return {} if value is MISSING else {state_key("factory-alpha", br_id, var): value}


def _plain(e: Evaluation) -> str:
    """Everything an evaluation reports but its trace, as text (NaN compares equal as text)."""
    execs = [(x.action_id, x.trigger_id, x.message, x.context["state"]) for x in e.execs]
    return repr((e.event_tracker_id, e.business_rule_id, e.matched, e.actions,
                 e.state_changes, e.captures, execs, e.error))  # fmt: skip


class _Run(NamedTuple):
    evaluations: list[str]
    traces: list[str]
    writes: str
    stored: str


def _run(
    rules: Sequence[Rule],
    brs: Sequence[BusinessRule],
    batch: Sequence[RuleInput],
    state: dict[str, Any] | None,
    *,
    traced: bool,
    reference: bool = False,
) -> _Run:
    store = MemoryStateStore(state)
    eng, _, _ = engine(list(rules), list(brs), ManualClock(NOW), store, reference=reference)
    out = eng.evaluate(batch, trace=traced)
    debug = {br.id for br in brs if br.debug}
    for e in out.evaluations:
        wanted = e.error is None and (traced or e.business_rule_id in debug)
        assert (e.trace is not None) == wanted
    return _Run([_plain(e) for e in out.evaluations], [repr(e.trace) for e in out.evaluations],
                repr(out.writes), repr(store.dump()))  # fmt: skip


def assert_same(
    rules: Sequence[Rule],
    brs: Sequence[BusinessRule],
    batch: Sequence[RuleInput],
    state: dict[str, Any] | None = None,
) -> None:
    """Both generated paths decide and report exactly as the closure tree, and the traced one
    (and a debug rule's untraced one) builds the same trace."""
    reference = _run(rules, brs, batch, state, traced=True, reference=True)
    traced = _run(rules, brs, batch, state, traced=True)
    plain = _run(rules, brs, batch, state, traced=False)
    for generated in (traced, plain):
        assert len(generated.evaluations) == len(reference.evaluations)
        for mine, theirs in zip(generated.evaluations, reference.evaluations, strict=True):
            assert mine == theirs
        assert (generated.writes, generated.stored) == (reference.writes, reference.stored)
    for mine, theirs in zip(traced.traces, reference.traces, strict=True):
        assert mine == theirs
    for shown, theirs in zip(plain.traces, reference.traces, strict=True):
        assert shown in ("None", theirs)  # debug rules: the same trace, untraced: none


def xy_events(xs: Sequence[Any], ys: Sequence[Any] = (MISSING,)) -> list[RuleInput]:
    return [event(data(x=x, y=y)) for x in xs for y in ys]


# --------------------------------------------------------------------------- operators


def usable(operator: str, value: Any) -> bool:
    """Whether the operator can use ``value`` as a known right operand (else it is refused at
    load: such a rule never evaluates, so there is nothing to compare)."""
    return right_problem(operator, value) is None


@pytest.mark.parametrize("operator", OPERATORS)
def test_literal_right_operand(operator: str) -> None:
    right = [w for w in VALUES if w is not MISSING and usable(operator, w)]
    for w in VALUES:
        if w is not MISSING and not usable(operator, w):
            with pytest.raises(ValidationError, match=f"operator {operator}: "):
                probe("refused", operator, EVENT_X, {"type": "literal", "value": w})
    rules = [probe(f"r{i}", operator, EVENT_X, {"type": "literal", "value": w})
             for i, w in enumerate(right)]  # fmt: skip
    brs = [bound(r.id, f"br{i}") for i, r in enumerate(rules)]
    assert_same(rules, brs, xy_events(VALUES))


@pytest.mark.parametrize("operator", OPERATORS)
def test_parameter_right_operand(operator: str) -> None:
    rule = probe("r", operator, EVENT_X, {"type": "variable", "value": "p"})
    brs = []
    for i, w in enumerate(VALUES):
        br = bound("r", f"br{i}", parameters=data(p=w))
        if w is MISSING or w is None or usable(operator, w):  # None: no value, as MISSING
            brs.append(br)
        else:
            with pytest.raises(RuleError, match=f"parameter 'p' .* {operator}\\): ") as info:
                compile_business_rule(rule, br)
            assert info.value.path == "parameters.p"
    assert_same([rule], brs, xy_events(VALUES))


@pytest.mark.parametrize("operator", OPERATORS)
def test_event_right_operand(operator: str) -> None:
    rule = probe("r", operator, EVENT_X, EVENT_Y)
    assert_same([rule], [bound("r", "br")], xy_events(SMALL, SMALL))


@pytest.mark.parametrize("operator", OPERATORS)
def test_state_operands_are_read_when_the_condition_runs(operator: str) -> None:
    right_state = probe("right", operator, EVENT_X, STATE_S)
    left_state = probe("left", operator, STATE_S, EVENT_Y)
    brs, state = [], {}
    for i, w in enumerate(SMALL):
        for rule in (right_state, left_state):
            brs.append(bound(rule.id, f"{rule.id}{i}"))
            state |= seeded(f"{rule.id}{i}", "s", w)
    assert_same([right_state, left_state], brs, xy_events(SMALL[:10], SMALL[:6]), state)


@pytest.mark.parametrize("operator", ["between", "betweenDate", "betweenTime"])
def test_pairs_of_operands(operator: str) -> None:
    bounds = [3, "3", 2.5, "abc", None, "2026-01-01T00:00:00Z", "2026-12-31", "08:00", "22:00"]
    rules = []
    for i, low in enumerate(bounds):
        for j, high in enumerate(bounds):
            pair = [{"type": "literal", "value": low}, {"type": "literal", "value": high}]
            if right_problem(operator, [low, high], listed=True) is None:
                rules.append(probe(f"lit{i}-{j}", operator, EVENT_X, pair))
            else:  # a bound the operator cannot use: refused at load
                with pytest.raises(ValidationError, match=f"operator {operator}: the "):
                    probe(f"lit{i}-{j}", operator, EVENT_X, pair)
        if right_problem(operator, [low, UNKNOWN], listed=True) is None:
            rules.append(probe(f"dyn{i}", operator, EVENT_X, [{"type": "literal", "value": low},
                                                             EVENT_Y]))  # fmt: skip
    assert len(rules) >= 10
    brs = [bound(r.id, f"br-{r.id}") for r in rules]
    assert_same(rules, brs, xy_events(SMALL, [MISSING, 20, "23:00", "2027-01-01"]))


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "dynamic"])
@pytest.mark.parametrize("operator", sorted(ENV_OPERATORS))
def test_now_and_timezones(operator: str, timezone: str) -> None:
    rights = ["12:30", "13:00", "2026-01-15T12:30:00", "2026-01-15", 600, "600", None]
    rules = [probe(f"r{i}", operator, {"type": "now"}, {"type": "literal", "value": w})
             for i, w in enumerate(rights) if usable(operator, w)]  # fmt: skip
    if operator in PAIR_OPERATORS:
        rules.append(probe("pair", operator, EVENT_X, [{"type": "now"}, EVENT_Y]))
    else:  # [now, x] is a list: a date or time operator compares with one value
        assert right_problem(operator, [NOW_OPERAND, UNKNOWN], listed=True) is not None
    assert rules
    brs = [bound(r.id, f"br-{r.id}", timezone=timezone) for r in rules]
    batch = [event(data(x=x, y="23:59"), metadata={"timezone": zone})
             for x in ("2026-01-15T11:00:00", "12:45", 1_767_225_600, "")
             for zone in ("Europe/Berlin", "America/New_York", "Mars/Olympus", "Europe")]  # fmt: skip
    assert_same(rules, brs, batch)


def test_non_env_operators_ignore_the_environment() -> None:
    """The generated code passes no environment to these operators: pin that they need none."""

    class NoEnv:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"operator read env.{name}")

    for name, function in OPERATOR_FUNCTIONS.items():
        if name in ENV_OPERATORS:
            continue
        for left in SMALL:
            for right in (*SMALL[:8], [1, 5], ["a", "b"], "^a"):
                try:
                    function(left, right, NoEnv())
                except AssertionError:
                    raise
                except Exception:  # errors are the operator's business, not this test's
                    pass


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize("op", ["increment", "decrement", "set"])
@pytest.mark.parametrize("kind", ["number", "text", "boolean"])
def test_state_actions(op: str, kind: str) -> None:
    amounts: list[dict[str, Any]] = [
        EVENT_Y, {"type": "now"}, {"type": "variable", "value": "p"}, {"type": "state", "value": "o"},
        *({"type": "literal", "value": w} for w in SMALL if w is not MISSING),
    ]  # fmt: skip
    rules = []
    for i, amount in enumerate(amounts):
        rules.append(Rule.model_validate({
            "kind": "Rule", "id": f"r{i}", "orgId": "acme",
            "parameters": [{"name": "p", "type": "text", "required": False}],
            "variables": [{"name": "v", "type": kind}, {"name": "o", "type": "number"}],
            "actions": [{"id": "act", "type": "state", "op": op, "variable": "v", "value": amount},
                        {"id": "twice", "type": "state", "op": op, "variable": "v", "value": amount}],
            "when": {"logic": "OR", "items": [
                {"type": "condition", "data": {"field": EVENT_X, "operator": "exists",
                                               "actions": ["act", "twice"]}},
                {"type": "condition", "data": {"field": {"type": "state", "value": "v"},
                                               "operator": "exists"}}]},
        }))  # fmt: skip
    brs, state = [], {}
    for rule in rules:
        for j, before in enumerate([MISSING, 5, 2.5, "7", "abc", True, 10**400]):
            br_id = f"{rule.id}-{j}"
            brs.append(bound(rule.id, br_id, parameters={"p": 4}))
            state |= seeded(br_id, "v", before) | seeded(br_id, "o", 2)
    # in one batch: each event sees the state the previous ones left (or undid on failure)
    batch = xy_events([1, MISSING], [3, "2", "x", True, float("nan"), 10**400, 1.5])
    assert_same(rules, brs, batch, state)


ENGINE_RULES = [
    (engine_tests.NESTED, [{"kind": k, "t": t, "door": d} for k in ("freezer", "fridge")
                           for t in (-20, -15, -5, "x", None) for d in (True, False, "true")]),
    (engine_tests.COUNTERS, [{"op": op, "n": n} for op in ("up", "down", "stamp", "bad", None)
                             for n in (1, "2", "x", 2.5)]),
    (engine_tests.TRACED, [{"t": t} for t in (3, 9, "9", None, "x")]),
    (engine_tests.CAPTURE, [{"temperature": t, "open": o, "at": a, "value": v}
                            for t in (1, "80.5", None) for o in ("TRUE", False, 1)
                            for a in (1_767_225_600, "2026-01-01", "x") for v in (80.0, True, "x")]),
    (patterns.COOLDOWN, [{"temperature": t} for t in (-20, -10, -9, 5, "3", None)]),
    (patterns.ESCALATION, [{"status": s} for s in ("critical", "ok") * 5]),
    (patterns.INCIDENT, [{"status": s} for s in ("ok", "critical", "critical", "ok", "x")]),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "inputs"), ENGINE_RULES, ids=[r.id for r, _ in ENGINE_RULES])
def test_the_engine_tests_rules_agree(rule: Rule, inputs: list[dict[str, Any]]) -> None:
    brs = [bound(rule.id, "plain", parameters={"threshold": -15} if rule is patterns.COOLDOWN else {}),
           bound(rule.id, "berlin", timezone="Europe/Berlin",
                 parameters={"threshold": -15} if rule is patterns.COOLDOWN else {})]  # fmt: skip
    assert_same([rule], brs, [event(d) for d in inputs])


# --------------------------------------------------------------------------- engine


class CountingClock(ManualClock):
    def __init__(self) -> None:
        super().__init__(NOW)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now()


def test_the_clock_is_read_once_per_batch_and_only_if_a_rule_applies() -> None:
    clock = CountingClock()
    eng, _, _ = engine([engine_tests.COUNTERS], [engine_tests.COUNTERS_BR], clock=clock)
    eng.evaluate([event({"op": "stamp"}) for _ in range(5)])
    assert clock.reads == 1
    eng.evaluate([event({"op": "stamp"}, org="site-b")] * 3)  # no business rule applies
    eng.evaluate([])
    assert clock.reads == 1


def test_scope_lookups_accept_tags_that_are_not_a_tuple() -> None:
    ruleset = RuleSet({patterns.COOLDOWN.id: patterns.COOLDOWN}, [patterns.COOLDOWN_BR],
                      ORG_PATHS)  # fmt: skip
    listed = RuleInput("t", "factory-alpha", ORG_PATHS["factory-alpha"], "a", "em300-th", {},
                       tags=["freezer"])  # type: ignore[arg-type]  # fmt: skip
    assert [br.id for br in ruleset.applicable(listed)] == [patterns.COOLDOWN_BR.id]
    tupled = RuleInput("t", "factory-alpha", ORG_PATHS["factory-alpha"], "a", "em300-th", {},
                       tags=("door",))  # fmt: skip
    assert ruleset.applicable(tupled) == []


def test_an_unloadable_event_timezone_reads_as_utc_instead_of_failing_the_batch() -> None:
    night = bound(engine_tests.NIGHT.id, "dyn", timezone="dynamic")
    clock = ManualClock(datetime(2026, 1, 15, 23, 30, tzinfo=UTC))
    eng = RuleEngine(RuleSet({engine_tests.NIGHT.id: engine_tests.NIGHT}, [night], ORG_PATHS),
                     MemoryStateStore(), clock=clock)  # fmt: skip
    batch = [event({}, metadata={"timezone": zone}) for zone in ("Europe", "x" * 300, "UTC")]
    for traced in (False, True):
        out = eng.evaluate(batch, trace=traced)
        assert [(e.matched, e.error) for e in out.evaluations] == [(True, None)] * 3
    eng.reference = True
    out = eng.evaluate(batch, trace=True)
    assert [(e.matched, e.error) for e in out.evaluations] == [(True, None)] * 3


# --------------------------------------------------------------------------- hostile input

HOSTILE = [
    "x'); __import__('os').system('touch PWNED'); ('",
    'a"""\n    raise SystemExit\n#',
    "{c0}); c0 = (",
    "\\'; exec(input()) #",
]


def nested(path: str, value: Any) -> dict[str, Any]:
    """A view holding ``value`` at ``path`` (plain keys only)."""
    view: dict[str, Any] = {}
    *parents, last = parse_path(path)
    inner = view
    for key in parents:
        inner = inner.setdefault(str(key), {})
    inner[str(last)] = value
    return view


def test_hostile_paths_values_and_ids_are_data_not_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for i, text in enumerate(HOSTILE):
        ident = text.replace("\n", " ")  # still hostile, and an id (no control characters)
        rule = Rule.model_validate({
            "kind": "Rule", "id": f"r-{ident}", "orgId": "acme",
            "parameters": [{"name": text, "type": "text", "default": text}],
            "variables": [{"name": "n", "type": "number"}, {"name": "t", "type": "text"}],
            "actions": [{"id": text, "type": "state", "op": "increment", "variable": "n"},
                        {"id": f"{text}-set", "type": "state", "op": "set", "variable": "t",
                         "value": {"type": "literal", "value": text}},
                        {"id": f"{text}-log", "type": "log", "name": text,
                         "captures": {}},
                        {"id": f"{text}-exec", "type": "exec", "triggerId": text, "message": text}],
            "when": {"logic": "AND", "items": [
                {"type": "condition", "data": {
                    "field": {"type": "event", "value": f"data.{text}"}, "operator": "equals",
                    "value": {"type": "variable", "value": text},
                    "actions": [text, f"{text}-set", f"{text}-log", f"{text}-exec"]}},
                {"type": "condition", "data": {
                    "field": {"type": "event", "value": f"data.{text}.{text}"},
                    "operator": "regex", "value": {"type": "literal", "value": re2.escape(text)}}}]},
        })  # fmt: skip
        br = bound(rule.id, f"br-{ident}")
        eng, store, _ = engine([rule], [br], clock=ManualClock(NOW))
        compiled = eng.rules.by_id[br.id]
        assert text not in compiled.run.__source__  # type: ignore[attr-defined]
        assert re2.escape(text) not in compiled.run.__source__  # type: ignore[attr-defined]
        assert text not in compiled.traced.__source__  # type: ignore[attr-defined]
        view = nested(f"data.{text}", text)
        out = eng.evaluate([event(view["data"]), event({"other": 1})])
        first, second = out.evaluations
        assert (first.matched, first.error) == (False, None), i  # the regex condition is false
        assert first.actions == [text, f"{text}-set", f"{text}-log", f"{text}-exec"]
        assert first.state_changes["t"] == {"from": "", "to": text}
        assert first.execs[0].message == text and first.execs[0].trigger_id == text
        assert (second.matched, second.actions) == (False, [])
        assert store.dump()[state_key("factory-alpha", br.id, "n")] == 1
        traced = eng.evaluate([event(view["data"])], trace=True).evaluations[0]
        assert traced.trace is not None
        assert traced.trace["items"][0]["left"] == traced.trace["items"][0]["right"] == text
    assert not (tmp_path / "PWNED").exists()


def test_source_refuses_literals_and_names_it_did_not_make() -> None:
    for line in ("return 'text'", 'return f"{view}"', "return __import__", "return open",
                 "return view.__class__", "return c0"):  # fmt: skip
        source = Source(("view",))
        source.emit(0, line)
        with pytest.raises(ValueError, match="generated source"):
            source.build("<test>")
    fine = Source(("view",))
    fine.emit(0, f"return {fine.const('text')}")
    assert fine.build("<test>")({}) == "text"
    assert set(fine.namespace["__builtins__"]) <= {"type", "dict", "bool", "float", "int",
                                                   "str", "Exception"}  # fmt: skip
