"""Test runs for the management API: a template's scripts on sample payloads, a business rule
in test mode on sample events, over bodies that need not be saved (the console tests what is
being edited before it is stored).

They run the engines ``eventray templates test`` and ``eventray rules test`` run (the same
QuickJS runner and limits, the same compiled rule evaluator on a sandbox state), so a test
passing here passes there. Nothing is written: a viewer may run them. The scope still holds:
a body owned by an organization outside the token's scope, a rule it cannot use, or an event
naming an asset or organization it cannot see answers as unknown (404), so a test run is no
way to learn what another tenant has.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventray.pipeline.catalog import build_catalog
from eventray.pipeline.errors import ConfigError, ConfigIssue, EventrayError
from eventray.pipeline.eva import extract_eva
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.management.entities import EntityService
from eventray.pipeline.management.errors import Invalid, NotFound
from eventray.pipeline.management.scope import Principal, Scope, covers
from eventray.pipeline.management.view import ConfigView
from eventray.pipeline.models import AssetTemplate, BusinessRule, Rule
from eventray.pipeline.models.base import Entity
from eventray.pipeline.models.template import DynamicField

if TYPE_CHECKING:
    from eventray.pipeline.scripts.host import ScriptHost
    from eventray.pipeline.scripts.limits import ScriptLimits

__all__ = ["MAX_SAMPLES", "eva_report", "run_rule_test", "run_template_test"]

MAX_SAMPLES = 100
"""Most payloads or events one test run takes: a test is for a person reading the result."""


def _parse(doc: Mapping[str, Any], kind: str, path: str) -> Entity:
    if not isinstance(doc, Mapping):
        raise Invalid(f"expected a {kind} object", path)
    body = {**doc, "kind": kind}
    issues: list[ConfigIssue] = []
    entity = entity_from_dict("request", body, issues)
    if issues or entity is None:
        raise ConfigError(
            [
                ConfigIssue(
                    "request", f"{path}.{i.path}" if i.path else path, i.reason, kind, i.entity_id
                )
                for i in issues
            ]
        )
    return entity


def _owned(scope: Scope, org_id: str | None, what: str) -> None:
    if org_id is not None and not scope.covers_org(org_id):
        raise NotFound(f"unknown organization {org_id!r} (of the {what})")


def run_template_test(
    entities: EntityService,
    principal: Principal,
    template: Mapping[str, Any],
    payloads: Sequence[Any],
    *,
    limits: ScriptLimits | None = None,
    host: ScriptHost | None = None,
) -> list[dict[str, Any]]:
    """Run ``template``'s decode -> validate -> transform on each payload: per payload the
    stages' outputs, then the Standard Event (with ``eva``: :func:`eva_report`, when the
    template has ``dynamicFields``) or the error ``{stage, message, line?}``.

    ``limits`` are the lanes' (``scripts.*`` settings); with ``host`` the scripts run in its
    child process, as the lanes' do, so a script that crashes QuickJS (possible on
    out-of-memory) fails its payload, not the server.

    Raises:
        Forbidden: not at least a viewer.
        NotFound: the template's organization is outside the scope.
        ConfigError: the template does not validate (field paths under ``template``).
        Invalid: too many payloads, or a script that does not compile.
    """
    from eventray.pipeline.scripts.bundle import bundle_for_template
    from eventray.pipeline.scripts.host import HostedRunner
    from eventray.pipeline.scripts.runner import ScriptRunner

    principal.require("viewer")
    if len(payloads) > MAX_SAMPLES:
        raise Invalid(f"at most {MAX_SAMPLES} payloads per test", "payloads")
    parsed = _parse(template, "AssetTemplate", "template")
    assert isinstance(parsed, AssetTemplate)
    _owned(entities.scope(principal), parsed.org_id, "template")
    runner: ScriptRunner | HostedRunner
    try:
        bundle = bundle_for_template(parsed)
        if host is not None:
            runner = HostedRunner(host, f"template-test:{uuid.uuid4().hex}", bundle)
        else:
            runner = ScriptRunner(bundle, limits=limits)
    except EventrayError as exc:
        raise Invalid(str(exc), "template") from exc
    try:
        results = runner.run(list(payloads), trace=True)
    finally:
        runner.close()
    reports: list[dict[str, Any]] = []
    for index, result in enumerate(results, start=1):
        stages = result.get("s", {})
        report: dict[str, Any] = {"input": index}
        for stage in ("decode", "validate", "transform"):
            if stage in stages:
                report[stage] = stages[stage]
        if "e" in result:
            report["error"] = result["e"]
        else:
            report["standardEvent"] = result["r"]
            if parsed.dynamic_fields and isinstance(result["r"], dict):
                report["eva"] = eva_report(parsed.dynamic_fields, result["r"])
        reports.append(report)
    return reports


def eva_report(fields: Sequence[DynamicField], event: dict[str, Any]) -> list[dict[str, Any]]:
    """What the lanes would store of ``event`` for each EVA field, by the lanes' own
    extraction (:func:`~eventray.pipeline.eva.extract_eva`): per field its ``fieldId``,
    ``field``, ``type`` and ``status``, then ``value`` (the stored form: dates as epoch
    milliseconds, geo as ``"lat,lng"``), or ``rejected: true`` (a value that does not fit the
    type, left out), or neither (no value at that path, or a deprecated field: not extracted).
    """
    values = extract_eva(fields, event)
    by_type: dict[str, dict[int, Any]] = {"number": values.number, "string": values.string,
                                          "bool": values.bool, "date": values.date,
                                          "geo": values.string}  # fmt: skip
    rejected = set(values.rejected)
    out: list[dict[str, Any]] = []
    for spec in fields:
        item: dict[str, Any] = {"fieldId": spec.field_id, "field": spec.field,
                                "type": spec.type, "status": spec.status}  # fmt: skip
        stored = by_type[spec.type]
        if spec.field_id in stored:
            item["value"] = (
                bool(stored[spec.field_id]) if spec.type == "bool" else stored[spec.field_id]
            )
        elif spec.field_id in rejected:
            item["rejected"] = True
        out.append(item)
    return out


def run_rule_test(
    entities: EntityService,
    principal: Principal,
    business_rule: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    *,
    rule: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Test mode (:func:`eventray.pipeline.rules.testmode.run_test_mode`) of
    ``business_rule`` (with ``rule`` in place of the stored rule it names, when given) over
    ``events``, against the stored configuration and a sandbox ``state``.

    Raises:
        Forbidden: not at least a viewer.
        NotFound: the business rule's or rule's organization, the rule, or an event's asset or
            organization is outside the scope (or unknown).
        ConfigError: a body does not validate, or the business rule does not compile.
        Invalid: too many events, or one the engine cannot take.
    """
    from eventray.pipeline.rules.testmode import run_test_mode

    principal.require("viewer")
    if len(events) > MAX_SAMPLES:
        raise Invalid(f"at most {MAX_SAMPLES} events per test", "events")
    view = entities.view()
    scope = entities.scope(principal, view)
    br = _parse(business_rule, "BusinessRule", "businessRule")
    assert isinstance(br, BusinessRule)
    _owned(scope, br.org_id, "business rule")
    extra: list[tuple[str, Entity]] = [("request", br)]
    skip = {("BusinessRule", br.id)}
    if rule is not None:
        parsed_rule = _parse(rule, "Rule", "rule")
        assert isinstance(parsed_rule, Rule)
        if parsed_rule.id != br.rule_id:
            raise Invalid(f"the rule's id {parsed_rule.id!r} is not the business rule's "
                          f"ruleId {br.rule_id!r}", "rule.id")  # fmt: skip
        if parsed_rule.system and not scope.writes_system_rules:
            raise NotFound(f"unknown rule {parsed_rule.id!r}")
        _owned(scope, parsed_rule.org_id, "rule")
        extra.append(("request", parsed_rule))
        skip.add(("Rule", parsed_rule.id))
    elif not _rule_usable(view, scope, br.rule_id):
        raise NotFound(f"unknown rule {br.rule_id!r}")
    for index, line in enumerate(events):
        _event_visible(view, scope, line, index)
    try:
        catalog = build_catalog(
            [*view.entities(skip), *extra],
            compile_scripts=False,
            compile_rules=lambda candidate: candidate.id == br.id,
        )
    except ConfigError as exc:
        mine = [i for i in exc.issues if i.source == "request"]
        raise ConfigError(mine or [ConfigIssue("stored", "", "the stored configuration does "
                                               "not validate")]) from exc  # fmt: skip
    try:
        return run_test_mode(catalog, br.id, events, state=state)
    except EventrayError as exc:
        raise Invalid(str(exc), "events") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        # The events are any JSON a caller pastes (``at`` a list, a tag a number...): what the
        # engine cannot take is the caller's to fix, a 422, not a 500.
        raise Invalid(f"an event the engine cannot take: {exc}", "events") from exc


def _rule_usable(view: ConfigView, scope: Scope, rule_id: str) -> bool:
    """The scope's own rules, its ancestors' (the catalog then checks they are shared) and
    system rules."""
    item = view.item("Rule", rule_id)
    if item is None:
        return False
    if item.path is None or scope.path_key is None:
        return True
    return bool(item.path) and (covers(scope.path_key, item.path)
                                or covers(item.path, scope.path_key))  # fmt: skip


def _event_visible(view: ConfigView, scope: Scope, line: Mapping[str, Any], index: int) -> None:
    if not isinstance(line, Mapping):
        raise Invalid("expected an event object", f"events[{index}]")
    event = line.get("event", line)
    if not isinstance(event, Mapping):
        raise Invalid("expected an object", f"events[{index}].event")
    metadata = event.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise Invalid("expected an object", f"events[{index}].metadata")
    asset_id = line.get("assetId") or (metadata or {}).get("assetId")
    if asset_id:
        item = view.item("Asset", str(asset_id))
        if item is not None and not view.visible(scope, item):
            raise NotFound(f"events[{index}]: unknown asset {asset_id!r}")
    org_id = line.get("orgId") or event.get("orgId")
    if org_id and not scope.covers_org(str(org_id)):
        raise NotFound(f"events[{index}]: unknown organization {org_id!r}")
