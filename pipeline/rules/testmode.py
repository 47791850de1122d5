"""Test mode: run one business rule over given events against a sandbox copy of its state.

Uses the same compiled evaluator as production (CONTRACTS.md: "Test Mode uses the same engine
and evaluation semantics as production"); only the state store is a private in-memory copy
and the clock follows the events, so a cooldown can be tested with a recorded sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import RuleError
from eventray.pipeline.rules.engine import RuleEngine, RuleSet
from eventray.pipeline.rules.outcome import Evaluation, RuleInput
from eventray.pipeline.rules.values import as_datetime

__all__ = ["TestEvent", "run_test_mode"]

TestEvent = Mapping[str, Any]


def _input(
    line: TestEvent, index: int, catalog: Catalog, default_org: str
) -> tuple[RuleInput, Any]:
    event = dict(line.get("event", line))
    at = line.get("at")
    metadata = dict(event.get("metadata") or {})
    asset = catalog.assets.get(str(line.get("assetId") or metadata.get("assetId") or ""))
    org_id = str(
        line.get("orgId") or event.get("orgId") or (asset.org_id if asset else default_org)
    )
    if org_id not in catalog.orgs:
        raise RuleError(f"event {index}: unknown organization {org_id!r}")
    asset_id = asset.id if asset else str(metadata.get("assetId", ""))
    metadata["assetId"] = asset_id
    view = {**event, "metadata": metadata, "orgId": org_id}
    view.pop("at", None)
    tracker = str(line.get("eventTrackerId") or f"test-{index + 1}")
    rule_input = RuleInput(
        event_tracker_id=tracker, org_id=org_id, path_key=catalog.orgs[org_id].path_key,
        asset_id=asset_id, template_id=asset.template_id if asset else str(line.get("templateId", "")),
        view=view, tags=tuple(asset.tags) if asset else tuple(line.get("tags", ())),
    )  # fmt: skip
    return rule_input, as_datetime(at if at is not None else event.get("created"))


def run_test_mode(
    catalog: Catalog,
    business_rule_id: str,
    events: Iterable[TestEvent],
    *,
    state: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``events`` one by one; per event: the evaluation tree with actual values, state
    changes ``{var: {from, to}}``, capture records and the exec actions it would run.

    Each event may be a Standard Event or ``{event, at?, assetId?, orgId?}``; the clock is set
    to ``at`` (else the event's ``created``) before it is evaluated.
    """
    br = catalog.business_rules.get(business_rule_id)
    if br is None:
        raise RuleError(f"unknown business rule {business_rule_id!r}")
    ruleset = RuleSet(catalog.rules, [br.model_copy(update={"enabled": True})], catalog.org_paths,
                      org_timezones=catalog.org_timezones())  # fmt: skip
    if br.id in ruleset.errors:
        raise RuleError(ruleset.errors[br.id])
    sandbox = MemoryStateStore(state)
    clock = ManualClock()
    engine = RuleEngine(ruleset, sandbox, clock=clock)
    results: list[dict[str, Any]] = []
    for index, line in enumerate(events):
        rule_input, moment = _input(line, index, catalog, br.org_id)
        if moment is not None:
            clock.set(moment)
        outcome = engine.evaluate([rule_input], trace=True, only=br.id)
        evaluation = outcome.evaluations[0] if outcome.evaluations else None
        results.append(_report(rule_input, evaluation))
    return results


def _report(event: RuleInput, evaluation: Evaluation | None) -> dict[str, Any]:
    if evaluation is None:
        return {"eventTrackerId": event.event_tracker_id, "inScope": False,
                "reason": "the business rule does not apply to this event's organization or asset"}  # fmt: skip
    return {
        "eventTrackerId": event.event_tracker_id,
        "inScope": True,
        "matched": evaluation.matched,
        "error": evaluation.error,
        "trace": evaluation.trace,
        "stateChanges": evaluation.state_changes,
        "actions": evaluation.actions,
        "captures": [
            {"action": c.action_id, "name": c.name, "fields": c.fields} for c in evaluation.captures
        ],
        "execs": [
            {"action": x.action_id, "triggerId": x.trigger_id, "message": x.message}
            for x in evaluation.execs
        ],
    }
