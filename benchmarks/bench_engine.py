"""Router and rule engine throughput against hand-written Python doing the same decisions.

* Router: one route group with 1 and with 10 match rules (policy all), 4 routers.
* Rules: a 3-condition AND rule with one state action (the seeds' cooldown shape), evaluated
  through the full engine: scope lookup, batched state load, evaluation, one atomic commit
  (in-memory store, so this is the CPU cost of the engine itself); and the same rule with
  ``debug: true``, which builds and keeps the evaluation trace of every event.

The eventray rows carry the throughput the issue asks of them (the baselines carry none).
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Result, measure_pair, print_table
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.models import BusinessRule, RouteGroup, Rule
from eventray.pipeline.routing import RouteTable
from eventray.pipeline.rules.engine import RuleEngine, RuleSet
from eventray.pipeline.rules.outcome import RuleInput

BATCH = 1000
ROUTER_TARGETS = {1: 200_000, 10: 500_000}  # events/s on one core, by match rules per router
RULES_TARGET = 300_000


def _views() -> list[dict[str, Any]]:
    return [
        {
            "eventType": "temperature",
            "eventId": f"e{i}",
            "created": "2026-03-01T08:00:00Z",
            "orgId": "site",
            "metadata": {"assetId": f"a{i % 20}", "source": "gateway"},
            "data": {
                "temperature": -25 + i % 15,
                "humidity": 40 + i % 30,
                "status": "ok" if i % 4 else "critical",
                "battery": 50 + i % 50,
                "doorOpen": i % 10 == 0,
            },
        }
        for i in range(BATCH)
    ]


def router() -> list[Result]:
    views = _views()
    results = []
    for n_rules in (1, 10):
        conditions = [{"field": "data.temperature", "operator": "gte", "value": -30}] + [
            {"field": "data.humidity", "operator": "lte", "value": 100 + k}
            for k in range(n_rules - 1)
        ]
        group = RouteGroup.model_validate(
            {
                "id": "rg",
                "orgId": "o",
                "name": "bench",
                "routers": [
                    {"kind": "save_event"},
                    {"kind": "rules", "match": {"policy": "all", "rules": conditions}},
                    {
                        "kind": "trigger",
                        "trigger": {"triggerId": "t"},
                        "match": {
                            "rules": [
                                {"field": "data.status", "operator": "eq", "value": "critical"}
                            ]
                        },
                    },
                    {
                        "kind": "publish",
                        "publish": {"subject": "alerts"},
                        "match": {
                            "rules": [{"field": "data.doorOpen", "operator": "eq", "value": True}]
                        },
                    },
                ],
            }
        )
        table = RouteTable([group])
        groups = ["rg"]

        def routed(table: RouteTable = table, groups: list[str] = groups) -> int:
            for view in views:
                table.route(view, groups)
            return len(views)

        def baseline(n: int = n_rules) -> int:
            for view in views:
                data = view["data"]
                out = ["save_event"]
                ok = data["temperature"] >= -30
                for k in range(n - 1):
                    ok = ok and data["humidity"] <= 100 + k
                if ok:
                    out.append("rules")
                if data["status"] == "critical":
                    out.append("trigger")
                if data["doorOpen"] is True:
                    out.append("publish")
            return len(views)

        subject, reference = measure_pair(
            (f"router, {n_rules} match rule(s)", routed),
            (f"hand-written if-chain, {n_rules} rule(s) (baseline)", baseline),
        )
        results += [subject.with_target(ROUTER_TARGETS[n_rules]), reference]
    return results


_RULE: dict[str, Any] = {
    "id": "r",
    "orgId": "o",
    "parameters": [{"name": "threshold", "type": "number"}],
    "variables": [{"name": "counter", "type": "number", "default": 0}],
    "actions": [{"id": "bump", "type": "state", "op": "increment", "variable": "counter"}],
    "when": {
        "logic": "AND",
        "actions": ["bump"],
        "items": [
            {
                "type": "condition",
                "data": {
                    "field": {"type": "event", "value": "data.temperature"},
                    "operator": "greaterThanEquals",
                    "value": {"type": "variable", "value": "threshold"},
                },
            },
            {
                "type": "condition",
                "data": {
                    "field": {"type": "event", "value": "data.status"},
                    "operator": "equals",
                    "value": {"type": "literal", "value": "critical"},
                },
            },
            {
                "type": "condition",
                "data": {
                    "field": {"type": "event", "value": "data.humidity"},
                    "operator": "lessThan",
                    "value": {"type": "literal", "value": 90},
                },
            },
        ],
    },
}


def _rule_engine(*, debug: bool) -> tuple[RuleEngine, list[RuleInput]]:
    br = BusinessRule.model_validate(
        {
            "id": "br",
            "ruleId": "r",
            "orgId": "o",
            "includeChildren": True,
            "parameters": {"threshold": -20},
            "debug": debug,
        }
    )
    engine = RuleEngine(
        RuleSet({"r": Rule.model_validate(_RULE)}, [br], {"o": "0001", "site": "0001/0001"}),
        MemoryStateStore(),
        clock=SystemClock(),
    )
    inputs = [
        RuleInput(
            event_tracker_id=f"t{i}",
            org_id="site",
            path_key="0001/0001",
            asset_id=v["metadata"]["assetId"],
            template_id="tpl",
            view=v,
        )
        for i, v in enumerate(_views())
    ]
    return engine, inputs


def rules() -> list[Result]:
    engine, inputs = _rule_engine(debug=False)
    state: dict[str, int] = {}

    def baseline() -> int:
        counter = state.get("state:site:br:counter", 0)
        for item in inputs:
            data = item.view["data"]
            if (
                data["temperature"] >= -20
                and data["status"] == "critical"
                and data["humidity"] < 90
            ):
                counter += 1
        state["state:site:br:counter"] = counter
        return len(inputs)

    subject, reference = measure_pair(
        (
            "rule engine, 3 conditions + 1 state action",
            lambda: (engine.evaluate(inputs), len(inputs))[1],
        ),
        ("hand-written Python condition (baseline)", baseline),
    )
    return [subject.with_target(RULES_TARGET), reference]


def traced_rules() -> list[Result]:
    """The same rule with ``debug: true``: every evaluation keeps its trace tree."""
    engine, inputs = _rule_engine(debug=True)
    state: dict[str, int] = {}
    traces: list[dict[str, Any]] = []

    def condition(path: str, operator: str, left: Any, right: Any, result: bool) -> dict[str, Any]:
        return {"type": "condition", "path": path, "operator": operator, "left": left,
                "right": right, "result": result}  # fmt: skip

    def baseline() -> int:
        counter = state.get("state:site:br:counter", 0)
        traces.clear()
        for item in inputs:
            data = item.view["data"]
            t, s, h = data["temperature"], data["status"], data["humidity"]
            a, b, c = t >= -20, s == "critical", h < 90
            matched = a and b and c
            items = [
                condition("when.items[0]", "greaterThanEquals", t, -20, a),
                condition("when.items[1]", "equals", s, "critical", b),
                condition("when.items[2]", "lessThan", h, 90, c),
            ]
            traces.append({"type": "group", "path": "when", "logic": "AND", "result": matched,
                           "items": items})  # fmt: skip
            if matched:
                counter += 1
        state["state:site:br:counter"] = counter
        return len(inputs)

    subject, reference = measure_pair(
        (
            "rule engine, debug rule (trace), 3 conditions + 1 state action",
            lambda: (engine.evaluate(inputs), len(inputs))[1],
        ),
        ("hand-written Python condition + trace (baseline)", baseline),
    )
    return [subject, reference]  # no issue sets a target for traced evaluation


def main() -> None:
    print_table("Router (one core)", router())
    print_table("Rule engine (one core, in-memory state)", rules() + traced_rules())


if __name__ == "__main__":
    main()
