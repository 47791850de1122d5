"""The seeds' three enterprise patterns, proven on event sequences."""

from __future__ import annotations

from eventray.pipeline.rules.engine import state_key
from tests.unit.rulekit import business_rule, engine, event, rule

COOLDOWN = rule("""
kind: Rule
id: high-temp-alert
orgId: acme
shared: true
parameters: [{name: threshold, type: number}, {name: cooldownSeconds, type: number, default: 600}]
variables:  [{name: lastAlertAt, type: text, default: ""}, {name: counter, type: number, default: 0}]
captureFields: [{name: temperature, type: number}, {name: assetId, type: text}]
actions:
  - {id: remember, type: state, op: set, variable: lastAlertAt, value: {type: now}}
  - {id: bump, type: state, op: increment, variable: counter, value: {type: literal, value: 1}}
  - {id: audit, type: log, captures: {temperature: {type: event, value: data.temperature},
                                      assetId: {type: event, value: metadata.assetId}}}
  - {id: notify, type: exec, triggerId: slack-ops,
     message: "Alert #{{state.counter}}: {{event.data.temperature}} on {{metadata.assetId}}"}
execution: {mode: sequential, onError: continue}
when:
  logic: AND
  items:
    - type: condition
      data: {field: {type: event, value: data.temperature}, operator: greaterThanEquals,
             value: {type: variable, value: threshold}}
    - type: condition
      data: {field: {type: state, value: lastAlertAt}, operator: olderThanSeconds,
             value: {type: variable, value: cooldownSeconds}}
  actions: [notify, remember, bump, audit]
""")
COOLDOWN_BR = business_rule("""
kind: BusinessRule
id: factory-alpha-high-temp
ruleId: high-temp-alert
orgId: acme
includeChildren: true
assets: {templateIds: [em300-th], tags: [freezer]}
parameters: {threshold: -15, cooldownSeconds: 600}
""")


def test_cooldown_suppresses_repeats_inside_window_and_fires_after() -> None:
    eng, store, clock = engine([COOLDOWN], [COOLDOWN_BR])
    fired = []
    for step, temperature in enumerate([-20, -10, -9, -12, -20, -8]):
        outcome = eng.evaluate([event({"temperature": temperature})])
        fired.append([x.message for e in outcome.evaluations for x in e.execs])
        clock.advance(seconds=120 if step < 4 else 700)
    # -10 at t=120s fires; -9 (240s) and -12 (360s) are inside the 600 s window; -20 is below
    # the threshold; -8 at t=480+700 is past the window and fires again.
    assert fired == [
        [],
        ["Alert #1: -10 on freezer-1"],
        [],
        [],
        [],
        ["Alert #2: -8 on freezer-1"],
    ]
    key = state_key("factory-alpha", "factory-alpha-high-temp", "counter")
    assert store.dump()[key] == 2


def test_rule_scope_org_children_and_asset_filters() -> None:
    eng, _, _ = engine([COOLDOWN], [COOLDOWN_BR])
    out = eng.evaluate(
        [
            event({"temperature": 0}, org="site-b"),  # child org: in scope
            event({"temperature": 0}, org="site-b", template="other"),  # template filter
            event({"temperature": 0}, org="site-b", tags=("door",)),  # tag filter
        ]
    )
    assert [e.event_tracker_id for e in out.evaluations] == [out.evaluations[0].event_tracker_id]
    assert out.evaluations[0].matched


ESCALATION = rule("""
kind: Rule
id: escalate-after-n
orgId: acme
parameters: [{name: escalateAfter, type: number, default: 3}]
variables: [{name: counter, type: number, default: 0}]
actions:
  - {id: bump, type: state, op: increment, variable: counter}
  - {id: reset, type: state, op: set, variable: counter, value: {type: literal, value: 0}}
  - {id: escalate, type: exec, triggerId: pager, message: "escalated after {{params.escalateAfter}}"}
when:
  logic: OR
  items:
    - type: condition
      data: {field: {type: event, value: data.status}, operator: equals,
             value: {type: literal, value: critical}, actions: [bump]}
    - type: condition
      data: {field: {type: state, value: counter}, operator: greaterThanEquals,
             value: {type: variable, value: escalateAfter}, actions: [escalate, reset]}
""")
ESCALATION_BR = business_rule("""
kind: BusinessRule
id: br-escalate
ruleId: escalate-after-n
orgId: factory-alpha
""")


def test_escalation_fires_on_exactly_the_nth_critical_and_resets() -> None:
    eng, store, _ = engine([ESCALATION], [ESCALATION_BR])
    statuses = ["critical", "ok", "critical", "critical", "critical", "critical", "critical"]
    escalations = []
    for status in statuses:
        out = eng.evaluate([event({"status": status})])
        escalations.append(sum(len(e.execs) for e in out.evaluations))
    # 3rd critical is the 4th event; then the count starts over: 6th critical is the 7th event
    assert escalations == [0, 0, 0, 1, 0, 0, 1]
    assert store.dump()[state_key("factory-alpha", "br-escalate", "counter")] == 0


def test_in_order_visibility_within_one_batch() -> None:
    eng, _, _ = engine([ESCALATION], [ESCALATION_BR])
    out = eng.evaluate([event({"status": "critical"}) for _ in range(7)])
    assert [len(e.execs) for e in out.evaluations] == [0, 0, 1, 0, 0, 1, 0]
    assert out.writes == {state_key("factory-alpha", "br-escalate", "counter"): 1}


INCIDENT = rule("""
kind: Rule
id: incident-lifecycle
orgId: acme
variables: [{name: incidentOpen, type: boolean, default: false}]
captureFields: [{name: transition, type: text}]
actions:
  - {id: open-ticket, type: exec, triggerId: ticketing, message: "open {{metadata.assetId}}"}
  - {id: close-ticket, type: exec, triggerId: ticketing, message: "close {{metadata.assetId}}"}
  - {id: mark-open, type: state, op: set, variable: incidentOpen, value: {type: literal, value: true}}
  - {id: mark-closed, type: state, op: set, variable: incidentOpen, value: {type: literal, value: false}}
  - {id: log-open, type: log, name: incident_opened, captures: {transition: {type: literal, value: opened}}}
  - {id: log-close, type: log, name: incident_closed, captures: {transition: {type: literal, value: closed}}}
when:
  logic: OR
  items:
    - type: group
      data:
        logic: AND
        items:
          - {type: condition, data: {field: {type: event, value: data.status}, operator: equals, value: {type: literal, value: critical}}}
          - {type: condition, data: {field: {type: state, value: incidentOpen}, operator: equals, value: {type: literal, value: false}}}
        actions: [open-ticket, mark-open, log-open]
    - type: group
      data:
        logic: AND
        items:
          - {type: condition, data: {field: {type: event, value: data.status}, operator: equals, value: {type: literal, value: ok}}}
          - {type: condition, data: {field: {type: state, value: incidentOpen}, operator: equals, value: {type: literal, value: true}}}
        actions: [close-ticket, mark-closed, log-close]
""")
INCIDENT_BR = business_rule("""
kind: BusinessRule
id: br-incident
ruleId: incident-lifecycle
orgId: factory-alpha
""")


def test_incident_opens_once_and_closes_once() -> None:
    eng, _, _ = engine([INCIDENT], [INCIDENT_BR])
    statuses = ["ok", "critical", "critical", "critical", "ok", "ok", "critical"]
    out = eng.evaluate([event({"status": s}) for s in statuses])
    messages = [x.message for e in out.evaluations for x in e.execs]
    assert messages == ["open freezer-1", "close freezer-1", "open freezer-1"]
    logs = [c.name for e in out.evaluations for c in e.captures]
    assert logs == ["incident_opened", "incident_closed", "incident_opened"]
    # actions run State -> Log -> Exec within an attachment, whatever order they are listed in
    assert out.evaluations[1].actions == ["mark-open", "log-open", "open-ticket"]
