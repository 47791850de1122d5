"""Small builders for rule tests (not fakes: they build real models and a real engine)."""

from __future__ import annotations

from typing import Any

import yaml

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.models import BusinessRule, Rule
from eventray.pipeline.rules.engine import RuleEngine, RuleSet
from eventray.pipeline.rules.outcome import RuleInput

ORG_PATHS = {"acme": "0001", "factory-alpha": "0001/0001", "site-b": "0001/0002"}


def rule(text: str) -> Rule:
    return Rule.model_validate(yaml.safe_load(text))


def business_rule(text: str) -> BusinessRule:
    return BusinessRule.model_validate(yaml.safe_load(text))


def engine(
    rules: list[Rule],
    brs: list[BusinessRule],
    clock: ManualClock | None = None,
    store: MemoryStateStore | None = None,
    *,
    reference: bool = False,
) -> tuple[RuleEngine, MemoryStateStore, ManualClock]:
    store = store or MemoryStateStore()
    clock = clock or ManualClock()
    ruleset = RuleSet({r.id: r for r in rules}, brs, ORG_PATHS)
    assert not ruleset.errors, ruleset.errors
    return RuleEngine(ruleset, store, clock=clock, reference=reference), store, clock


_counter = 0


def event(
    data: dict[str, Any],
    *,
    org: str = "factory-alpha",
    asset: str = "freezer-1",
    template: str = "em300-th",
    tags: tuple[str, ...] = ("freezer",),
    seq: int | None = None,
    metadata: dict[str, Any] | None = None,
    event_type: str = "telemetry",
) -> RuleInput:
    global _counter
    _counter += 1
    view = {
        "eventType": event_type,
        "eventId": f"e{_counter}",
        "data": data,
        "metadata": {"assetId": asset, **(metadata or {})},
        "created": "2026-01-01T00:00:00Z",
        "orgId": org,
    }
    return RuleInput(
        event_tracker_id=f"trk-{_counter}",
        org_id=org,
        path_key=ORG_PATHS[org],
        asset_id=asset,
        template_id=template,
        view=view,
        tags=tags,
        seq=seq,
    )
