"""The rule engine (engine.py), its compiler (compiler.py) and the in-memory state store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.models import BusinessRule, Rule
from eventray.pipeline.ports import StateSnapshot
from eventray.pipeline.rules.engine import RuleSet, state_key
from eventray.pipeline.rules.outcome import CaptureRecord
from tests.unit.rulekit import ORG_PATHS, engine, event, rule


class CountingStore(MemoryStateStore):
    """A real MemoryStateStore that also records every load and commit call."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        super().__init__(initial)
        self.loads: list[list[str]] = []
        self.commits: list[tuple[dict[str, Any], int]] = []

    def load(self, keys: Sequence[str], *, partition: str) -> StateSnapshot:
        self.loads.append(list(keys))
        return super().load(keys, partition=partition)

    def commit(self, writes: Mapping[str, Any], *, partition: str, seq: int) -> bool:
        self.commits.append((dict(writes), seq))
        return super().commit(writes, partition=partition, seq=seq)


def br(rule_id: str, br_id: str | None = None, **extra: Any) -> BusinessRule:
    doc = {"kind": "BusinessRule", "id": br_id or f"br-{rule_id}", "ruleId": rule_id,
           "orgId": "factory-alpha", **extra}  # fmt: skip
    return BusinessRule.model_validate(doc)


def cond(path: str, operator: str, value: Any = None, actions: str = "") -> str:
    """One condition item on an event field against a literal, as YAML flow text."""
    right = "" if value is None else f", value: {{type: literal, value: {value}}}"
    extra = f", actions: [{actions}]" if actions else ""
    return (f"{{type: condition, data: {{field: {{type: event, value: {path}}}, "
            f"operator: {operator}{right}{extra}}}}}")  # fmt: skip


def logic_rule(rule_id: str, logic: str) -> Rule:
    return rule(f"""
kind: Rule
id: {rule_id}
orgId: acme
actions: [{{id: hit, type: exec, triggerId: t}}]
when:
  logic: {logic}
  items:
    - {cond("data.a", "equals", 1)}
    - {cond("data.b", "equals", 1)}
  actions: [hit]
""")


# --------------------------------------------------------------------------- logic


@pytest.mark.parametrize(
    ("logic", "truth"),
    [
        ("AND", [False, False, False, True]),
        ("OR", [False, True, True, True]),
        ("NAND", [True, True, True, False]),
        ("NOR", [True, False, False, False]),
    ],
)
def test_group_logic_truth_tables(logic: str, truth: list[bool]) -> None:
    eng, _, _ = engine([logic_rule("logic", logic)], [br("logic")])
    inputs = [{"a": 0, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 0}, {"a": 1, "b": 1}]
    out = eng.evaluate([event(data) for data in inputs])
    assert [e.matched for e in out.evaluations] == truth
    assert [e.actions for e in out.evaluations] == [["hit"] if t else [] for t in truth]


NESTED = rule(f"""
kind: Rule
id: nested
orgId: acme
actions:
  - {{id: inner-hit, type: exec, triggerId: t, message: inner}}
  - {{id: outer-hit, type: exec, triggerId: t, message: outer}}
  - {{id: cond-hit, type: exec, triggerId: t, message: cond}}
when:
  logic: AND
  items:
    - {cond("data.kind", "equals", "freezer")}
    - type: group
      data:
        logic: NOR
        items:
          - {cond("data.t", "greaterThan", -10, "cond-hit")}
          - type: group
            data:
              logic: AND
              items:
                - {cond("data.door", "equals", "true")}
                - {cond("data.t", "greaterThan", -18)}
              actions: [inner-hit]
  actions: [outer-hit]
""")


def test_nested_groups_and_condition_level_vs_group_level_actions() -> None:
    eng, _, _ = engine([NESTED], [br("nested")])
    out = eng.evaluate([
        event({"kind": "freezer", "t": -20, "door": False}),  # NOR(F, AND(F, F)) -> outer
        event({"kind": "freezer", "t": -15, "door": True}),   # NOR(F, AND(T, T)) -> inner only
        event({"kind": "freezer", "t": -5, "door": False}),   # NOR(T, ...)      -> cond only
        event({"kind": "fridge", "t": -20, "door": False}),   # first condition false
    ])  # fmt: skip
    assert [e.matched for e in out.evaluations] == [True, False, False, False]
    assert [[x.message for x in e.execs] for e in out.evaluations] == [
        ["outer"],
        ["inner"],
        ["cond"],
        [],
    ]


def test_every_condition_is_evaluated_without_short_circuit() -> None:
    eng, _, _ = engine([NESTED], [br("nested")])
    out = eng.evaluate([event({"kind": "fridge", "t": 0, "door": True})], trace=True)
    evaluation = out.evaluations[0]
    assert evaluation.matched is False
    # the first condition already decides the AND, but the later items still run, and their
    # attached actions fire: the condition's and the inner group's
    assert evaluation.actions == ["cond-hit", "inner-hit"]
    assert evaluation.trace is not None
    assert [item["result"] for item in evaluation.trace["items"]] == [False, False]


# --------------------------------------------------------------------------- state actions

COUNTERS = rule("""
kind: Rule
id: counters
orgId: acme
variables:
  - {name: counter, type: number, default: 10}
  - {name: lastSeen, type: text}
  - {name: label, type: text, default: "abc"}
  - {name: flag, type: boolean}
actions:
  - {id: up, type: state, op: increment, variable: counter, value: {type: literal, value: 5}}
  - {id: down, type: state, op: decrement, variable: counter, value: {type: event, value: data.n}}
  - {id: stamp, type: state, op: set, variable: lastSeen, value: {type: now}}
  - {id: raise-flag, type: state, op: set, variable: flag, value: {type: literal, value: "TRUE"}}
  - {id: bad, type: state, op: increment, variable: label}
  - {id: say, type: exec, triggerId: t, message: "n={{state.counter}}"}
when:
  logic: OR
  items:
    - {type: condition, data: {field: {type: event, value: data.op}, operator: equals,
                               value: {type: literal, value: up}, actions: [up]}}
    - {type: condition, data: {field: {type: event, value: data.op}, operator: equals,
                               value: {type: literal, value: down}, actions: [down]}}
    - {type: condition, data: {field: {type: event, value: data.op}, operator: equals,
                               value: {type: literal, value: stamp}, actions: [stamp, raise-flag]}}
    - {type: condition, data: {field: {type: event, value: data.op}, operator: equals,
                               value: {type: literal, value: bad}, actions: [say, up, bad]}}
""")
COUNTERS_BR = br("counters", "br-counters")


def key(var: str, org: str = "factory-alpha", br_id: str = "br-counters") -> str:
    return f"state:{org}:{br_id}:{var}"


def test_increment_decrement_and_defaults_for_missing_keys() -> None:
    eng, store, _ = engine([COUNTERS], [COUNTERS_BR])
    out = eng.evaluate([event({"op": "up"}), event({"op": "down", "n": 2.5})])
    assert [e.state_changes for e in out.evaluations] == [
        {"counter": {"from": 10, "to": 15}},  # empty state reads the default 10
        {"counter": {"from": 15, "to": 12.5}},
    ]
    assert out.writes == {key("counter"): 12.5}
    assert store.dump() == {key("counter"): 12.5}


def test_stored_state_overrides_defaults_and_other_vars_keep_defaults() -> None:
    store = MemoryStateStore({key("counter"): 100})
    eng, _, _ = engine([COUNTERS], [COUNTERS_BR], store=store)
    out = eng.evaluate([event({"op": "down", "n": "1"})])
    assert out.evaluations[0].state_changes == {"counter": {"from": 100, "to": 99}}
    assert store.dump() == {key("counter"): 99}  # untouched variables are not written


def test_set_now_into_text_variable_stores_the_clock_as_iso() -> None:
    clock = ManualClock(datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC))
    eng, store, _ = engine([COUNTERS], [COUNTERS_BR], clock=clock)
    out = eng.evaluate([event({"op": "stamp"})])
    assert out.evaluations[0].state_changes == {
        "lastSeen": {"from": "", "to": "2026-03-04T05:06:07.890Z"},
        "flag": {"from": False, "to": True},  # "TRUE" coerced into a boolean variable
    }
    assert store.dump()[key("lastSeen")] == "2026-03-04T05:06:07.890Z"
    assert store.dump()[key("flag")] is True


def test_type_error_is_reported_and_the_rest_of_the_batch_proceeds() -> None:
    eng, store, _ = engine([COUNTERS], [COUNTERS_BR])
    out = eng.evaluate([event({"op": "up"}), event({"op": "bad"}), event({"op": "up"})])
    first, failed, last = out.evaluations
    assert failed.error is not None
    assert "bad" in failed.error and "needs numbers" in failed.error
    # nothing of the failed evaluation stands: not its increment of counter, nor its exec
    assert failed.matched is False
    assert failed.state_changes == {} and failed.execs == [] and failed.actions == []
    assert first.error is None and last.error is None
    assert first.state_changes == {"counter": {"from": 10, "to": 15}}
    assert last.state_changes == {"counter": {"from": 15, "to": 20}}
    assert out.writes == {key("counter"): 20}
    assert store.dump() == {key("counter"): 20}


def test_failed_evaluation_alone_writes_nothing() -> None:
    store = CountingStore()
    eng, _, _ = engine([COUNTERS], [COUNTERS_BR], store=store)
    out = eng.evaluate([event({"op": "bad"})])
    assert out.evaluations[0].error is not None
    assert out.writes == {}
    assert store.commits == []
    assert store.dump() == {}


def test_one_load_and_one_commit_per_batch() -> None:
    store = CountingStore()
    eng, _, _ = engine([COUNTERS], [COUNTERS_BR], store=store)
    batch = [event({"op": op}, seq=i + 1) for i, op in enumerate(["up", "down", "up", "stamp"])]
    batch[1] = event({"op": "down", "n": 1}, seq=2)
    out = eng.evaluate(batch)
    assert len(out.evaluations) == 4
    assert store.loads == [sorted(key(v) for v in ("counter", "flag", "label", "lastSeen"))]
    assert len(store.commits) == 1
    writes, seq = store.commits[0]
    assert seq == 4
    assert writes[key("counter")] == 19  # 10 + 5 - 1 + 5
    assert set(writes) == {key("counter"), key("lastSeen"), key("flag")}


def test_sequence_fence_replayed_batch_changes_nothing() -> None:
    store = CountingStore()
    eng, _, _ = engine([COUNTERS], [COUNTERS_BR], store=store)
    batch = [event({"op": "up"}, seq=1), event({"op": "up"}, seq=2)]
    first = eng.evaluate(batch)
    assert first.replayed == [] and first.committed
    assert store.dump() == {key("counter"): 20}
    again = eng.evaluate(batch)
    assert again.replayed == [e.event_tracker_id for e in batch]
    assert again.evaluations == [] and again.writes == {}
    assert store.dump() == {key("counter"): 20}
    assert len(store.loads) == 2 and len(store.commits) == 1


def test_partially_replayed_batch_applies_only_new_sequences() -> None:
    eng, store, _ = engine([COUNTERS], [COUNTERS_BR])
    eng.evaluate([event({"op": "up"}, seq=1), event({"op": "up"}, seq=2)])
    overlap = [event({"op": "up"}, seq=s) for s in (2, 3)]
    out = eng.evaluate(overlap)
    assert out.replayed == [overlap[0].event_tracker_id]
    assert [e.event_tracker_id for e in out.evaluations] == [overlap[1].event_tracker_id]
    assert store.dump() == {key("counter"): 25}
    # the fence is per partition
    other = eng.evaluate([event({"op": "up"}, seq=1)], partition="p1")
    assert other.replayed == [] and store.dump() == {key("counter"): 30}


def test_memory_store_fence_refuses_old_sequences() -> None:
    store = MemoryStateStore()
    assert store.commit({"k": 1}, partition="p", seq=5) is True
    assert store.commit({"k": 2}, partition="p", seq=5) is False
    assert store.commit({"k": 3}, partition="p", seq=4) is False
    assert store.commit({"k": 4}, partition="p", seq=0) is True  # no sequence: no fence
    assert store.dump() == {"k": 4}
    snapshot = store.load(["k", "absent"], partition="p")
    assert snapshot == StateSnapshot({"k": 4}, 5)
    assert store.load([], partition="other").applied_seq == 0


def test_state_keys_use_the_events_org_not_the_business_rules_org() -> None:
    parent_br = br("counters", "br-parent", orgId="acme", includeChildren=True)
    eng, store, _ = engine([COUNTERS], [parent_br])
    eng.evaluate([event({"op": "up"}, org="factory-alpha"), event({"op": "up"}, org="site-b")])
    assert store.dump() == {
        "state:factory-alpha:br-parent:counter": 15,
        "state:site-b:br-parent:counter": 15,
    }
    assert state_key("o", "b", "v") == "state:o:b:v"


COUNTERS_RULE_TEXT = """
kind: Rule
id: counters
orgId: acme
variables: [{name: counter, type: number}]
actions: [{id: up, type: state, op: increment, variable: counter}]
when: {items: [{type: condition, data: {field: {type: event, value: data.op}, operator: exists}}],
       actions: [up]}
"""


def test_disabled_business_rules_and_rules_do_not_fire() -> None:
    disabled_rule = rule(COUNTERS_RULE_TEXT.replace("id: counters", "id: paused\nenabled: false"))
    eng, store, _ = engine(
        [COUNTERS, disabled_rule],
        [br("counters", "br-off", enabled=False), br("paused", "br-rule-paused")],
    )
    out = eng.evaluate([event({"op": "up"})])
    assert out.evaluations == [] and store.dump() == {}


def test_ruleset_reports_unknown_rules_and_bad_parameters() -> None:
    needs = rule("""
kind: Rule
id: needs-param
orgId: acme
parameters: [{name: threshold, type: number}]
when: {items: [{type: condition, data: {field: {type: event, value: data.t}, operator: greaterThan,
                                         value: {type: variable, value: threshold}}}]}
""")
    ruleset = RuleSet(
        {needs.id: needs},
        [
            br("needs-param", "missing"),
            br("needs-param", "wrong", parameters={"threshold": "hot"}),
            br("needs-param", "extra", parameters={"threshold": 1, "other": 2}),
            br("ghost", "ghost"),
        ],
        ORG_PATHS,
    )
    assert set(ruleset.errors) == {"missing", "wrong", "extra", "ghost"}
    assert "required" in ruleset.errors["missing"]
    assert "must be a number" in ruleset.errors["wrong"]
    assert "['other']" in ruleset.errors["extra"]
    assert ruleset.errors["ghost"] == "unknown rule 'ghost'"


# --------------------------------------------------------------------------- timezones

NIGHT = rule("""
kind: Rule
id: night
orgId: acme
actions: [{id: hit, type: exec, triggerId: t}]
when:
  items:
    - {type: condition, data: {field: {type: now}, operator: betweenTime,
       value: [{type: literal, value: "22:00"}, {type: literal, value: "06:00"}]}}
  actions: [hit]
""")


def test_dynamic_timezone_comes_from_event_metadata() -> None:
    clock = ManualClock(datetime(2026, 1, 15, 21, 30, tzinfo=UTC))  # 22:30 in Berlin
    eng, _, _ = engine([NIGHT], [br("night", "dyn", timezone="dynamic")], clock=clock)
    out = eng.evaluate(
        [
            event({}, metadata={"timezone": "Europe/Berlin"}),
            event({}, metadata={"timezone": "UTC"}),
            event({}),  # no timezone: UTC
            event({}, metadata={"timezone": "Mars/Olympus"}),  # unknown: UTC
        ]
    )
    assert [e.matched for e in out.evaluations] == [True, False, False, False]


def test_fixed_timezone_ignores_event_metadata() -> None:
    clock = ManualClock(datetime(2026, 1, 15, 21, 30, tzinfo=UTC))
    eng, _, _ = engine(
        [NIGHT],
        [br("night", "berlin", timezone="Europe/Berlin"), br("night", "utc", timezone="UTC")],
        clock=clock,
    )
    out = eng.evaluate([event({}, metadata={"timezone": "UTC"})])
    assert {e.business_rule_id: e.matched for e in out.evaluations} == {
        "berlin": True,
        "utc": False,
    }


# --------------------------------------------------------------------------- trace

TRACED = rule("""
kind: Rule
id: traced
orgId: acme
parameters: [{name: limit, type: number, default: 5}]
variables: [{name: seen, type: number}]
when:
  logic: OR
  items:
    - {type: condition, data: {field: {type: event, value: data.t}, operator: greaterThan,
                               value: {type: variable, value: limit}}}
    - type: group
      data:
        logic: NAND
        items:
          - {type: condition, data: {field: {type: state, value: seen}, operator: equals,
                                     value: {type: literal, value: 0}}}
          - {type: condition, data: {field: {type: event, value: data.missing}, operator: exists}}
""")


def test_trace_tree_shape() -> None:
    eng, _, _ = engine([TRACED], [br("traced")])
    out = eng.evaluate([event({"t": 3})], trace=True)
    assert out.evaluations[0].trace == {
        "type": "group", "path": "when", "logic": "OR", "result": True,
        "items": [
            {"type": "condition", "path": "when.items[0]", "operator": "greaterThan",
             "left": 3, "right": 5, "result": False},
            {"type": "group", "path": "when.items[1]", "logic": "NAND", "result": True,
             "items": [
                 {"type": "condition", "path": "when.items[1].items[0]", "operator": "equals",
                  "left": 0, "right": 0, "result": True},
                 {"type": "condition", "path": "when.items[1].items[1]", "operator": "exists",
                  "left": None, "right": None, "result": False},
             ]},
        ],
    }  # fmt: skip
    assert out.evaluations[0].matched is True


def test_trace_only_when_asked_or_debug() -> None:
    eng, _, _ = engine([TRACED], [br("traced", "quiet"), br("traced", "loud", debug=True)])
    out = eng.evaluate([event({"t": 9})])
    traces = {e.business_rule_id: e.trace for e in out.evaluations}
    assert traces["quiet"] is None
    assert traces["loud"] is not None and traces["loud"]["result"] is True


# --------------------------------------------------------------------------- log and exec

CAPTURE = rule("""
kind: Rule
id: capture
orgId: acme
parameters: [{name: channel, type: text, default: "#ops"}]
variables: [{name: counter, type: number}]
captureFields:
  - {name: temperature, type: number}
  - {name: open, type: boolean}
  - {name: at, type: date}
  - {name: label, type: text}
  - {name: absent, type: number}
actions:
  - {id: bump, type: state, op: increment, variable: counter}
  - {id: audit, type: log, name: reading, captures: {
      temperature: {type: event, value: data.temperature},
      open: {type: event, value: data.open},
      at: {type: event, value: data.at},
      label: {type: event, value: data.value},
      absent: {type: event, value: data.nope}}}
  - {id: notify, type: exec, triggerId: slack-ops,
     message: "#{{state.counter}} {{event.data.value}} to {{params.channel}}
       on {{metadata.assetId}} token={{secrets.SLACK_TOKEN}}"}
when:
  items:
    - {type: condition, data: {field: {type: event, value: data.temperature}, operator: exists}}
  actions: [notify, audit, bump]
""")


def test_log_captures_are_typed_by_capture_fields() -> None:
    eng, _, _ = engine([CAPTURE], [br("capture")])
    out = eng.evaluate([event({"temperature": "80.5", "open": "TRUE", "at": 1_767_225_600,
                               "value": 80.0})])  # fmt: skip
    assert out.evaluations[0].captures == [
        CaptureRecord("br-capture", "audit", "reading", {
            "temperature": 80.5, "open": True, "at": "2026-01-01T00:00:00.000Z",
            "label": "80", "absent": None,
        })
    ]  # fmt: skip


def test_exec_message_renders_state_params_metadata_but_not_secrets() -> None:
    eng, _, _ = engine([CAPTURE], [br("capture", parameters={"channel": "#alerts"})])
    out = eng.evaluate([event({"temperature": 1, "value": True}, asset="freezer-9")] * 2)
    assert [e.actions for e in out.evaluations] == [["bump", "audit", "notify"]] * 2
    messages = [x.message for e in out.evaluations for x in e.execs]
    # the state action ran before the exec (State -> Log -> Exec), so the counter is updated
    assert messages == [
        "#1 true to #alerts on freezer-9 token={{secrets.SLACK_TOKEN}}",
        "#2 true to #alerts on freezer-9 token={{secrets.SLACK_TOKEN}}",
    ]
    intent = out.evaluations[0].execs[0]
    assert (intent.trigger_id, intent.action_id, intent.business_rule_id) == (
        "slack-ops", "notify", "br-capture",
    )  # fmt: skip
    assert intent.context["state"] == {"counter": 1}
    assert intent.context["params"] == {"channel": "#alerts"}
    assert intent.context["metadata"] == {"assetId": "freezer-9"}


def test_state_change_is_visible_to_later_conditions_in_the_same_event() -> None:
    chain = rule("""
kind: Rule
id: chain
orgId: acme
variables: [{name: n, type: number}]
actions: [{id: bump, type: state, op: increment, variable: n}]
when:
  logic: AND
  items:
    - {type: condition, data: {field: {type: event, value: data.go}, operator: exists,
                               actions: [bump]}}
    - {type: condition, data: {field: {type: state, value: n}, operator: equals,
                               value: {type: literal, value: 1}}}
""")
    eng, _, _ = engine([chain], [br("chain")])
    out = eng.evaluate([event({"go": 1}), event({"go": 1})])
    assert [e.matched for e in out.evaluations] == [True, False]


# --------------------------------------------------------------------------- known bug


DATED = rule("""
kind: Rule
id: dated
orgId: acme
when:
  items: [{type: condition, data: {field: {type: event, value: data.ts}, operator: afterDate,
                                    value: {type: literal, value: "2025-01-01T00:00:00Z"}}}]
""")


def test_out_of_range_date_does_not_abort_the_batch() -> None:
    eng, _, _ = engine([DATED], [br("dated")])
    out = eng.evaluate([event({"ts": 1_767_225_600_000_000}), event({"ts": 1_767_225_600})])
    assert len(out.evaluations) == 2
    assert out.evaluations[1].matched is True
    assert out.evaluations[0].matched is False or out.evaluations[0].error is not None
