"""The traced generated evaluator against the closure tree, over whole rules.

test_rule_codegen.py holds each operator and each action kind to the reference one at a time;
here rules combine them: nested groups of every logic, actions at condition and group level
whose state changes later conditions read, Log and Exec actions rendered against that state,
failures part-way through a tree, dynamic timezones, missing fields. A table of named rules
states the cases on purpose; seeded random rule trees cover the combinations nobody wrote.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from eventray.pipeline.clock import ManualClock
from eventray.pipeline.models import Rule
from eventray.pipeline.models.rule import OPERATORS
from eventray.pipeline.paths import MISSING
from eventray.pipeline.rules.operands import NOW as NOW_OPERAND
from eventray.pipeline.rules.operands import UNKNOWN, right_problem
from tests.unit.rulekit import engine, event
from tests.unit.test_rule_codegen import NOW as CLOCK
from tests.unit.test_rule_codegen import SMALL, assert_same, bound, seeded

PAIRED = ("between", "betweenDate", "betweenTime")
UNARY = ("exists", "notExists")

ACTIONS: list[dict[str, Any]] = [
    {"id": "inc-n", "type": "state", "op": "increment", "variable": "n"},
    {"id": "dec-n", "type": "state", "op": "decrement", "variable": "n",
     "value": {"type": "event", "value": "data.y"}},
    {"id": "set-s", "type": "state", "op": "set", "variable": "s",
     "value": {"type": "event", "value": "data.x"}},
    {"id": "inc-s", "type": "state", "op": "increment", "variable": "s"},  # fails on text
    {"id": "stamp", "type": "state", "op": "set", "variable": "at", "value": {"type": "now"}},
    {"id": "flag", "type": "state", "op": "set", "variable": "b",
     "value": {"type": "literal", "value": "true"}},
    {"id": "log", "type": "log", "name": "probe", "captures": {
        "cn": {"type": "state", "value": "n"}, "ct": {"type": "event", "value": "data.x"},
        "cb": {"type": "event", "value": "data.y"}, "cd": {"type": "state", "value": "at"}}},
    {"id": "exec", "type": "exec", "triggerId": "hook",
     "message": "n={{state.n}} s={{state.s}} x={{event.data.x}} p={{params.p}}"},
]  # fmt: skip


def rule(rule_id: str, when: dict[str, Any]) -> Rule:
    return Rule.model_validate({
        "kind": "Rule", "id": rule_id, "orgId": "acme",
        "parameters": [{"name": "p", "type": "text", "required": False},
                       {"name": "q", "type": "number", "default": 2}],
        "variables": [{"name": "n", "type": "number"}, {"name": "s", "type": "text"},
                      {"name": "b", "type": "boolean"}, {"name": "at", "type": "text"}],
        "captureFields": [{"name": "cn", "type": "number"}, {"name": "ct", "type": "text"},
                          {"name": "cb", "type": "boolean"}, {"name": "cd", "type": "date"}],
        "actions": ACTIONS,
        "when": when,
    })  # fmt: skip


def ref(kind: str, value: Any = None) -> dict[str, Any]:
    return {"type": kind, "value": value}


def cond(left: dict[str, Any], operator: str, right: Any = None, *actions: str) -> dict[str, Any]:
    data = {"field": left, "operator": operator, "actions": list(actions)}
    return {"type": "condition", "data": data if right is None else {**data, "value": right}}


def group(logic: str, *items: dict[str, Any], actions: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "group", "data": {"logic": logic, "items": list(items),
                                      "actions": list(actions)}}  # fmt: skip


X, Y, N, S, AT = (ref("event", "data.x"), ref("event", "data.y"), ref("state", "n"),
                  ref("state", "s"), ref("state", "at"))  # fmt: skip
NOW = ref("now")
HIGH = {"betweenTime": "22:00"}  # a number is no time of day: refused at load

# --------------------------------------------------------------------------- the table

TABLE: dict[str, dict[str, Any]] = {
    "every logic, nested, actions at each level": group(
        "OR",
        group("AND", cond(X, "exists", None, "inc-n"), cond(N, "greaterThan", ref("literal", 1)),
              actions=("log",)),
        group("NAND", cond(Y, "lessThan", ref("variable", "q"), "set-s"),
              group("NOR", cond(S, "equals", X), cond(X, "in", ref("literal", [1, "a"])),
                    actions=("exec", "stamp"))),
        cond(AT, "newerThanSeconds", ref("literal", 60), "flag"),
        actions=("exec", "inc-n"),
    )["data"],
    "a state change is read by the conditions after it": group(
        "AND",
        cond(X, "exists", None, "inc-n", "inc-n"),
        cond(N, "greaterThanEquals", ref("literal", 2), "log"),
        group("OR", cond(N, "between", [ref("literal", 0), Y]), cond(N, "equals", ref("literal", "2"))),
        actions=("stamp", "exec"),
    )["data"],
    "a failure part-way undoes what came before": group(
        "AND",
        cond(X, "exists", None, "inc-n", "set-s", "log", "exec"),
        cond(S, "notExists", None),
        cond(X, "exists", None, "inc-s"),  # incrementing a text variable fails unless numeric
    )["data"],
    "dates and times, in the rule's or the event's timezone": group(
        "OR",
        cond(NOW, "betweenTime", [ref("literal", "08:00"), ref("literal", "22:00")]),
        cond(X, "afterTime", NOW),
        cond(X, "betweenDate", [ref("literal", "2026-01-01"), NOW], "stamp"),
        cond(AT, "olderThanSeconds", ref("variable", "q"), "stamp", "log"),
        cond(ref("event", "metadata.timezone"), "startsWith", ref("literal", "Europe")),
    )["data"],
    "missing fields and paths through things that are not objects": group(
        "NOR",
        cond(ref("event", "data.missing"), "notExists", None, "inc-n"),
        cond(ref("event", "data.x.deep"), "equals", ref("literal", 3)),
        cond(ref("event", "data.list[1]"), "exists", None, "log"),
        cond(ref("event", "data.list[1]"), "notEquals", ref("variable", "p")),
        cond(ref("variable", "p"), "notExists", None),
        actions=("exec",),
    )["data"],
    "every operator in one group": group(
        "NAND",
        *(cond(X, op, None if op in UNARY else [Y, ref("literal", HIGH.get(op, 30))]
               if op in PAIRED else Y)
          for op in OPERATORS),
        actions=("inc-n", "log"),
    )["data"],
    "an invalid regex from the event fails the evaluation": group(
        "OR", cond(X, "regex", Y, "inc-n"), cond(X, "exists", None, "exec"),
    )["data"],
}  # fmt: skip

TABLE_EVENTS: list[dict[str, Any]] = [
    {"x": 3, "y": 5}, {"x": "a", "y": "("}, {"x": "2026-01-15T11:59:30Z", "y": "23:00"},
    {"x": "12:30", "y": 1_767_225_600}, {"x": {"deep": 3}, "list": [1, "z"]}, {"y": "2"},
    {"x": None, "y": None, "list": []}, {"x": [1, 2], "y": "abc"}, {"x": "3", "y": True},
    {"x": 10**400, "y": float("nan")}, {},
]  # fmt: skip
ZONES: list[str | None] = ["Europe/Berlin", "America/New_York", "Mars/Olympus", None]


def _batch(datas: list[dict[str, Any]]) -> list[Any]:
    return [event(d, metadata={} if zone is None else {"timezone": zone})
            for d in datas for zone in ZONES]  # fmt: skip


def _deployments(rule_id: str) -> tuple[list[Any], dict[str, Any]]:
    """The rule in three timezones, debug or not, and with state seeded or not."""
    brs, state = [], {}
    for i, zone in enumerate(("UTC", "Europe/Berlin", "dynamic")):
        for debug in (False, True):
            br_id = f"{rule_id}-{i}-{int(debug)}"
            brs.append(bound(rule_id, br_id, timezone=zone, debug=debug,
                             parameters={"p": "z"} if debug else {}))  # fmt: skip
            if debug:
                state |= seeded(br_id, "s", "4") | seeded(br_id, "at", "2026-01-15T11:58:00")
    return brs, state


@pytest.mark.parametrize("name", list(TABLE))
def test_table(name: str) -> None:
    r = rule("r", TABLE[name])
    brs, state = _deployments(r.id)
    assert_same([r], brs, _batch(TABLE_EVENTS), state)


# --------------------------------------------------------------------------- random trees

LEFTS = [X, Y, X, Y, N, S, AT, NOW, ref("variable", "p"), ref("variable", "q"),
         ref("event", "data.missing"), ref("event", "data.x.deep"), ref("event", "data.list[0]"),
         ref("event", "metadata.timezone")]  # fmt: skip
LITERALS = [w for w in SMALL if w is not MISSING] + ["08:00", "2026-01-01", "^[a-c]", 60]
STATE_ACTIONS = [a["id"] for a in ACTIONS if a["type"] == "state" and a["id"] != "inc-s"]
OTHER_ACTIONS = ["log", "exec", "inc-s"]


def _operand(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.4:
        return ref("literal", rng.choice(LITERALS))
    return rng.choice(LEFTS)


def _actions(rng: random.Random) -> list[str]:
    chosen = rng.sample(STATE_ACTIONS, rng.choice((0, 0, 1, 2)))
    if rng.random() < 0.2:
        chosen.append(rng.choice(OTHER_ACTIONS))
    return chosen


# The parameters as _deployments gives them: p is "z" (debug) or not given, q defaults to 2.
_KNOWN_PARAMS = {"p": "z", "q": 2}


def _known(operand: dict[str, Any]) -> Any:
    kind = operand["type"]
    if kind == "literal":
        return operand["value"]
    if kind == "now":
        return NOW_OPERAND
    return _KNOWN_PARAMS[operand["value"]] if kind == "variable" else UNKNOWN


def _usable(op: str, right: Any) -> bool:
    if right is None:
        return op in UNARY
    if isinstance(right, list):
        return right_problem(op, [_known(r) for r in right], listed=True) is None
    return right_problem(op, _known(right)) is None


def _tree(rng: random.Random, depth: int) -> dict[str, Any]:
    items = []
    for _ in range(rng.randint(1, 4)):
        if depth < 3 and rng.random() < 0.3:
            items.append({"type": "group", "data": _tree(rng, depth + 1)})
            continue
        op = rng.choice(OPERATORS)
        right: Any = None
        while not _usable(op, right):  # what the operator cannot use is refused at load
            if op in PAIRED and rng.random() < 0.7:
                right = [_operand(rng), _operand(rng)]
            elif op not in UNARY:
                right = _operand(rng)
        items.append(cond(rng.choice(LEFTS), op, right, *_actions(rng)))
    logic = rng.choice(("AND", "OR", "NAND", "NOR"))
    return {"logic": logic, "items": items, "actions": _actions(rng)}


@pytest.mark.parametrize("seed", range(12))
def test_random_rule_trees(seed: int) -> None:
    rng = random.Random(seed)
    rules = [rule(f"r{seed}-{k}", _tree(rng, 0)) for k in range(6)]
    brs, state = [], {}
    for r in rules:
        found = _deployments(r.id)
        brs += found[0]
        state |= found[1]
    values = [w for w in SMALL if w is not MISSING]
    datas = [
        {k: rng.choice(values) for k in ("x", "y", "list") if rng.random() < 0.85} for _ in range(8)
    ]
    assert_same(rules, brs, _batch(datas), state)


def test_traces_share_nothing_a_reader_could_edit() -> None:
    """Nodes and lists are the trace's own (as the reference's are), so editing one trace
    leaves the next alone: the generated function copies its templates, and known lists."""
    when = group("AND", cond(X, "in", ref("literal", [1, "a"])),
                 cond(X, "between", [ref("literal", 0), ref("literal", 5)]))["data"]  # fmt: skip
    r = rule("own", when)
    eng, _, _ = engine([r], [bound(r.id, "br")], ManualClock(CLOCK))
    first, second = (eng.evaluate([event({"x": 1})], trace=True).evaluations[0].trace
                     for _ in range(2))  # fmt: skip
    assert first is not None and first == second
    first["items"][0]["right"].append("edited")
    first["items"][1]["right"].clear()
    first["items"][1]["left"] = "edited"
    first["items"].clear()
    first["result"] = "edited"
    assert eng.evaluate([event({"x": 1})], trace=True).evaluations[0].trace == second
    assert second is not None and second["items"][0]["right"] == [1, "a"]
