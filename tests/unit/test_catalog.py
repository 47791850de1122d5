"""Loading and cross-checking entities (pipeline/loader.py, pipeline/catalog.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.errors import ConfigError, ConfigIssue

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TENANT = REPO / "config" / "samples" / "tenant"

# A small, valid tenant; each test replaces or adds files to break one thing.
BASE: dict[str, str] = {
    "orgs.yaml": """
- {kind: Organization, id: root, name: Root, type: vendor}
- {kind: Organization, id: cust, name: Cust, type: customer, parentId: root}
- {kind: Organization, id: other, name: Other, type: customer, parentId: root}
""",
    "templates.yaml": """
kind: AssetTemplate
id: tpl
orgId: cust
name: T
scriptConversion: |
  result = {eventType: "t", eventId: "1", data: payload, created: "2026-01-01T00:00:00Z"};
""",
    "triggers.yaml": """
kind: Trigger
id: hook
orgId: cust
name: Hook
triggerType: http
config: {http: {endpoint: "http://127.0.0.1/x"}}
""",
    "routegroups.yaml": """
kind: RouteGroup
id: rg
orgId: cust
name: RG
routers: [{kind: save_event}, {kind: trigger, trigger: {triggerId: hook}}]
""",
    "assets.yaml": """
{kind: Asset, id: a1, orgId: cust, assetUUID: U1, name: A1, templateId: tpl, routeGroupIds: [rg]}
""",
    "rules.yaml": """
kind: Rule
id: r1
orgId: cust
parameters: [{name: threshold, type: number}]
actions: [{id: go, type: exec, triggerId: hook, message: "hi {{metadata.assetId}}"}]
when:
  logic: AND
  items:
    - type: condition
      data: {field: {type: event, value: data.t}, operator: greaterThan,
             value: {type: variable, value: threshold}}
  actions: [go]
""",
    "businessrules.yaml": """
{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust, parameters: {threshold: 5}}
""",
}


def write_tenant(root: Path, **files: str) -> Path:
    """BASE plus overrides (``name_yaml="..."`` writes ``name.yaml``; "" drops a BASE file)."""
    contents = dict(BASE)
    for name, text in files.items():
        contents[re.sub(r"_(yaml|yml|json|js)$", r".\1", name)] = text
    for name, text in contents.items():
        if text:
            (root / name).write_text(text)
    return root


def issues_of(root: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_catalog([root])
    assert str(info.value).startswith(f"{len(info.value.issues)} configuration problem(s)")
    return info.value.issues


def only_issue(root: Path, entity_id: str) -> ConfigIssue:
    found = [i for i in issues_of(root) if i.entity_id == entity_id]
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- good loads


def test_base_tenant_loads(tmp_path: Path) -> None:
    catalog = load_catalog([write_tenant(tmp_path)])
    assert sorted(catalog.orgs) == ["cust", "other", "root"]
    assert catalog.org_paths == {"root": "0001", "cust": "0001/0001", "other": "0001/0002"}
    assert catalog.business_rules["br1"].parameters == {"threshold": 5}
    assert catalog.sources[("Asset", "a1")] == str(tmp_path / "assets.yaml")


def test_sample_tenant_loads_with_a_deep_org_tree() -> None:
    catalog = load_catalog([SAMPLE_TENANT])
    orgs = catalog.orgs
    assert max(org.depth for org in orgs.values()) >= 4
    assert orgs["alpha-cold-room-1"].depth == 5
    assert orgs["alpha-cold-room-2"].path_key == "0001/0001/0001/0001/0001/0002"
    for org in orgs.values():
        if org.parent_id is None:
            assert re.fullmatch(r"\d{4}", org.path_key), org
            assert org.depth == 0
        else:
            parent = orgs[org.parent_id]
            assert re.fullmatch(re.escape(parent.path_key) + r"/\d{4}", org.path_key), org
            assert org.depth == parent.depth + 1
    assert len({org.path_key for org in orgs.values()}) == len(orgs)
    assert catalog.is_ancestor_or_self("acme-foods", "alpha-cold-room-2")
    assert not catalog.is_ancestor_or_self("depot-beta", "alpha-cold-room-2")
    assert {"rg-cold-chain", "rg-critical-webhook"} <= set(catalog.route_groups)
    assert not catalog.rule_set().errors


def test_sample_script_file_reference_is_inlined() -> None:
    catalog = load_catalog([SAMPLE_TENANT], compile_scripts=False)
    codec = (REPO / "config" / "samples" / "codecs" / "milesight-em300-th.js").read_text()
    assert catalog.templates["em300-th"].script_processor == codec


def test_org_code_pins_the_path_segment(tmp_path: Path) -> None:
    orgs = """
- {kind: Organization, id: root, name: Root, type: vendor}
- {kind: Organization, id: cust, name: Cust, type: customer, parentId: root, code: 1}
- {kind: Organization, id: other, name: Other, type: customer, parentId: root}
- {kind: Organization, id: pinned, name: P, type: site, parentId: cust, code: 42}
"""
    catalog = load_catalog([write_tenant(tmp_path, orgs_yaml=orgs)])
    # "other" has no code: it takes the first ordinal not pinned by a sibling
    assert catalog.org_paths == {
        "root": "0001", "cust": "0001/0001", "other": "0001/0002", "pinned": "0001/0001/0042",
    }  # fmt: skip


def test_duplicate_sibling_codes_are_refused(tmp_path: Path) -> None:
    orgs = """
- {kind: Organization, id: root, name: Root, type: vendor}
- {kind: Organization, id: cust, name: Cust, type: customer, parentId: root, code: 3}
- {kind: Organization, id: other, name: Other, type: customer, parentId: root, code: 3}
"""
    issues = issues_of(write_tenant(tmp_path, orgs_yaml=orgs))
    assert [(i.entity_id, i.path) for i in issues] == [("other", "code")]


def test_file_reference_is_inlined_relative_to_the_entity_file(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    script = 'result = {eventType: "t", eventId: "1", data: {}, created: "2026-01-01T00:00:00Z"};'
    (tmp_path / "scripts" / "conv.js").write_text(script)
    template = (
        "{kind: AssetTemplate, id: tpl, orgId: cust, name: T, "
        "scriptConversion: {file: scripts/conv.js}}"
    )
    catalog = load_catalog([write_tenant(tmp_path, templates_yaml=template)])
    assert catalog.templates["tpl"].script_conversion == script


# --------------------------------------------------------------------------- broken entities


def test_unknown_operator_in_a_nested_group(tmp_path: Path) -> None:
    rule = """
kind: Rule
id: r1
orgId: cust
parameters: [{name: threshold, type: number}]
when:
  logic: AND
  items:
    - type: group
      data:
        logic: OR
        items:
          - type: condition
            data: {field: {type: event, value: data.t}, operator: equals,
                   value: {type: literal, value: 1}}
          - type: condition
            data: {field: {type: event, value: data.t}, operator: biggerThan,
                   value: {type: literal, value: 1}}
"""
    issue = only_issue(write_tenant(tmp_path, rules_yaml=rule), "r1")
    assert issue.source == str(tmp_path / "rules.yaml")
    assert issue.kind == "Rule"
    assert issue.path == "when.items[0].data.items[1].data.operator"
    assert "'greaterThan'" in issue.reason and "'olderThanSeconds'" in issue.reason
    # file:line:column of the "operator" key in the flow mapping that holds "biggerThan"
    line = rule.splitlines().index(next(t for t in rule.splitlines() if "biggerThan" in t)) + 1
    column = rule.splitlines()[line - 1].index("operator") + 1
    assert (issue.line, issue.column) == (line, column)
    assert str(issue) == (
        f"{tmp_path / 'rules.yaml'}:{line}:{column} [Rule r1] at "
        f"when.items[0].data.items[1].data.operator: {issue.reason}"
    )


def test_invalid_yaml(tmp_path: Path) -> None:
    issues = issues_of(write_tenant(tmp_path, broken_yaml="kind: Organization\nid: [unclosed\n"))
    assert len(issues) == 1
    (issue,) = issues
    assert issue.source == str(tmp_path / "broken.yaml")
    assert issue.path == ""  # no field to point at: the file does not parse
    assert issue.reason == (
        "YAML syntax: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"
    )
    assert (issue.line, issue.column) == (3, 1)  # where the parser gave up: the end
    assert str(issue).startswith(f"{tmp_path / 'broken.yaml'}:3:1: YAML syntax: ")


def test_invalid_json(tmp_path: Path) -> None:
    (issue,) = issues_of(write_tenant(tmp_path, broken_json='{"kind": "Organization",'))
    assert issue.source == str(tmp_path / "broken.json")
    assert (issue.reason, issue.line, issue.column) == (
        "JSON syntax: unexpected end of data",
        1,
        25,
    )


def test_unknown_kind(tmp_path: Path) -> None:
    issue = only_issue(write_tenant(tmp_path, gizmo_yaml="{kind: Gizmo, id: g1}"), "g1")
    assert issue.source == str(tmp_path / "gizmo.yaml")
    assert issue.path == "kind"
    assert issue.reason.startswith("unknown kind 'Gizmo'; expected one of")
    assert "BusinessRule" in issue.reason


def test_entity_must_be_a_mapping(tmp_path: Path) -> None:
    text = "- {kind: Organization, id: extra, name: E, type: site, parentId: cust}\n- just text"
    issues = issues_of(write_tenant(tmp_path, list_yaml=text))
    assert [(i.source, i.path, i.reason) for i in issues] == [
        (str(tmp_path / "list.yaml"), "[1]", "an entity must be a mapping"),
    ]


def test_duplicate_id(tmp_path: Path) -> None:
    dup = (
        "{kind: Trigger, id: hook, orgId: cust, name: H2, triggerType: http, "
        "config: {http: {endpoint: 'http://127.0.0.1/y'}}}"
    )
    root = write_tenant(tmp_path, z_triggers_yaml=dup)
    issue = only_issue(root, "hook")
    # files are read in sorted order: the later file holds the duplicate
    assert issue.source == str(tmp_path / "z_triggers.yaml")
    assert issue.path == "id"
    assert issue.reason == f"duplicate Trigger id (also in {tmp_path / 'triggers.yaml'})"


def test_same_id_in_different_kinds_is_fine(tmp_path: Path) -> None:
    same = (
        "{kind: Trigger, id: cust, orgId: cust, name: H, triggerType: http, "
        "config: {http: {endpoint: 'http://127.0.0.1/y'}}}"
    )
    catalog = load_catalog([write_tenant(tmp_path, more_yaml=same)])
    assert "cust" in catalog.triggers and "cust" in catalog.orgs


def test_unknown_parent(tmp_path: Path) -> None:
    lost = "{kind: Organization, id: lost, name: L, type: site, parentId: nowhere}"
    issue = only_issue(write_tenant(tmp_path, lost_yaml=lost), "lost")
    assert (issue.source, issue.path, issue.reason) == (
        str(tmp_path / "lost.yaml"), "parentId", "unknown organization 'nowhere'",
    )  # fmt: skip


def test_child_of_an_org_with_unknown_parent_is_not_called_a_cycle(tmp_path: Path) -> None:
    orgs = """
- {kind: Organization, id: lost, name: L, type: site, parentId: nowhere}
- {kind: Organization, id: lost-child, name: LC, type: building, parentId: lost}
"""
    issues = issues_of(write_tenant(tmp_path, lost_yaml=orgs))
    assert not any("cycle" in i.reason for i in issues), issues


def test_org_parent_cycle(tmp_path: Path) -> None:
    cycle = """
- {kind: Organization, id: x1, name: X1, type: site, parentId: x2}
- {kind: Organization, id: x2, name: X2, type: site, parentId: x1}
"""
    issues = issues_of(write_tenant(tmp_path, cycle_yaml=cycle))
    assert sorted((i.entity_id, i.path, i.reason) for i in issues) == [
        ("x1", "parentId", "organization is part of a parent cycle"),
        ("x2", "parentId", "organization is part of a parent cycle"),
    ]
    assert {i.source for i in issues} == {str(tmp_path / "cycle.yaml")}


def test_self_parent_is_a_cycle(tmp_path: Path) -> None:
    me = "{kind: Organization, id: me, name: Me, type: site, parentId: me}"
    issue = only_issue(write_tenant(tmp_path, me_yaml=me), "me")
    assert (issue.path, issue.reason) == ("parentId", "organization is part of a parent cycle")


def test_asset_with_unknown_template_and_route_group(tmp_path: Path) -> None:
    asset = (
        "{kind: Asset, id: a1, orgId: cust, assetUUID: U1, name: A1, templateId: nope, "
        "routeGroupIds: [rg, rg-nope]}"
    )
    issues = issues_of(write_tenant(tmp_path, assets_yaml=asset))
    assert sorted((i.source, i.kind, i.entity_id, i.path, i.reason) for i in issues) == [
        (str(tmp_path / "assets.yaml"), "Asset", "a1", "routeGroupIds[1]",
         "unknown route group 'rg-nope'"),
        (str(tmp_path / "assets.yaml"), "Asset", "a1", "templateId",
         "unknown asset template 'nope'"),
    ]  # fmt: skip


def test_route_group_with_unknown_trigger(tmp_path: Path) -> None:
    group = (
        "{kind: RouteGroup, id: rg, orgId: cust, name: RG, "
        "routers: [{kind: save_event}, {kind: trigger, trigger: {triggerId: ghost}}]}"
    )
    issue = only_issue(write_tenant(tmp_path, routegroups_yaml=group), "rg")
    assert (issue.source, issue.path, issue.reason) == (
        str(tmp_path / "routegroups.yaml"), "routers[1].trigger.triggerId",
        "unknown trigger 'ghost'",
    )  # fmt: skip


def test_rule_exec_action_with_unknown_trigger(tmp_path: Path) -> None:
    rule = BASE["rules.yaml"].replace("triggerId: hook", "triggerId: ghost")
    issue = only_issue(write_tenant(tmp_path, rules_yaml=rule), "r1")
    assert (issue.source, issue.path, issue.reason) == (
        str(tmp_path / "rules.yaml"), "actions[0].triggerId", "unknown trigger 'ghost'",
    )  # fmt: skip


def test_business_rule_with_unknown_rule(tmp_path: Path) -> None:
    br = "{kind: BusinessRule, id: br1, ruleId: nope, orgId: cust}"
    issue = only_issue(write_tenant(tmp_path, businessrules_yaml=br), "br1")
    assert (issue.source, issue.kind, issue.path, issue.reason) == (
        str(tmp_path / "businessrules.yaml"), "BusinessRule", "ruleId", "unknown rule 'nope'",
    )  # fmt: skip


def test_business_rule_using_another_orgs_private_rule(tmp_path: Path) -> None:
    br = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: other, parameters: {threshold: 5}}"
    issue = only_issue(write_tenant(tmp_path, businessrules_yaml=br), "br1")
    assert (issue.path, issue.reason) == (
        "ruleId", "rule 'r1' of organization 'cust' is not shared with 'other'",
    )  # fmt: skip


def test_shared_rule_is_usable_by_child_orgs_only(tmp_path: Path) -> None:
    orgs = BASE["orgs.yaml"] + (
        "- {kind: Organization, id: kid, name: Kid, type: site, parentId: cust}\n"
    )
    rule = BASE["rules.yaml"].replace("orgId: cust\n", "orgId: cust\nshared: true\n", 1)
    kid = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: kid, parameters: {threshold: 5}}"
    trigger = BASE["triggers.yaml"].replace("orgId: cust\n", "orgId: cust\nshared: true\n")
    shared = {"orgs_yaml": orgs, "rules_yaml": rule, "triggers_yaml": trigger}
    catalog = load_catalog([write_tenant(tmp_path, **shared, businessrules_yaml=kid)])
    assert catalog.business_rules["br1"].org_id == "kid"
    # shared reaches down the tree, not across to a sibling of the rule's org
    sibling = kid.replace("orgId: kid", "orgId: other")
    issue = only_issue(write_tenant(tmp_path, **shared, businessrules_yaml=sibling), "br1")
    assert issue.reason == "rule 'r1' of organization 'cust' is not shared with 'other'"


KID_ORG = "- {kind: Organization, id: kid, name: Kid, type: site, parentId: cust}\n"


def test_a_route_group_may_not_dispatch_another_orgs_trigger(tmp_path: Path) -> None:
    group = BASE["routegroups.yaml"].replace("orgId: cust", "orgId: other")
    issue = only_issue(write_tenant(tmp_path, routegroups_yaml=group), "rg")
    assert (issue.path, issue.reason) == (
        "routers[1].trigger.triggerId",
        "trigger 'hook' of organization 'cust' is not shared with 'other'",
    )


def test_a_shared_trigger_reaches_down_the_tree_only(tmp_path: Path) -> None:
    trigger = BASE["triggers.yaml"].replace("orgId: cust\n", "orgId: cust\nshared: true\n")
    kid_group = BASE["routegroups.yaml"].replace("orgId: cust", "orgId: kid")
    orgs = BASE["orgs.yaml"] + KID_ORG
    asset = BASE["assets.yaml"].replace("orgId: cust", "orgId: kid")
    template = BASE["templates.yaml"].replace("orgId: cust\n", "orgId: cust\nshared: true\n")
    files = {"orgs_yaml": orgs, "triggers_yaml": trigger, "assets_yaml": asset,
             "templates_yaml": template}  # fmt: skip
    catalog = load_catalog([write_tenant(tmp_path, **files, routegroups_yaml=kid_group)])
    assert catalog.may_dispatch(catalog.triggers["hook"], "kid")
    assert not catalog.may_dispatch(catalog.triggers["hook"], "other")
    assert catalog.lineage("kid") == ("kid", "cust", "root")
    # unshared, the same group of the child organization is refused
    del files["triggers_yaml"]
    issue = only_issue(write_tenant(tmp_path, **files, routegroups_yaml=kid_group), "rg")
    assert issue.reason == "trigger 'hook' of organization 'cust' is not shared with 'kid'"


def test_a_rule_may_not_dispatch_another_orgs_trigger(tmp_path: Path) -> None:
    rules = BASE["rules.yaml"].replace("orgId: cust", "orgId: other")
    br = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: other, parameters: {threshold: 5}}"
    issue = only_issue(write_tenant(tmp_path, rules_yaml=rules, businessrules_yaml=br), "r1")
    assert (issue.path, issue.reason) == (
        "actions[0].triggerId", "trigger 'hook' of organization 'cust' is not shared with 'other'"
    )  # fmt: skip


def test_a_system_rule_dispatches_only_triggers_the_business_rule_s_org_may_use(
    tmp_path: Path,
) -> None:
    rules = BASE["rules.yaml"].replace("orgId: cust", "system: true")
    ok = load_catalog([write_tenant(tmp_path, rules_yaml=rules)])  # br1 of cust: its own trigger
    assert ok.business_rules["br1"].org_id == "cust"
    br = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: other, parameters: {threshold: 5}}"
    issue = only_issue(write_tenant(tmp_path, rules_yaml=rules, businessrules_yaml=br), "br1")
    assert (issue.path, issue.reason) == (
        "ruleId", "rule 'r1' dispatches trigger 'hook' (actions[0]) of organization 'cust', "
        "which is not shared with 'other'",
    )  # fmt: skip


def test_an_asset_may_not_use_another_orgs_route_group(tmp_path: Path) -> None:
    asset = BASE["assets.yaml"].replace("orgId: cust", "orgId: other")
    template = BASE["templates.yaml"].replace("orgId: cust", "orgId: other")
    issue = only_issue(write_tenant(tmp_path, assets_yaml=asset, templates_yaml=template), "a1")
    assert (issue.path, issue.reason) == (
        "routeGroupIds[0]",
        "route group 'rg' of organization 'cust' is neither 'other''s nor an ancestor's",
    )


def test_missing_required_parameter(tmp_path: Path) -> None:
    br = "{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust}"
    issue = only_issue(write_tenant(tmp_path, businessrules_yaml=br), "br1")
    assert (issue.source, issue.path, issue.reason) == (
        str(tmp_path / "businessrules.yaml"), "parameters",
        "parameter 'threshold' is required by rule 'r1'",
    )  # fmt: skip


def test_template_script_syntax_error(tmp_path: Path) -> None:
    template = """
kind: AssetTemplate
id: tpl
orgId: cust
name: T
scriptConversion: |
  const a = 1;
  result = {eventType: "t", eventId: "1" data: payload};
"""
    issue = only_issue(write_tenant(tmp_path, templates_yaml=template), "tpl")
    assert issue.source == str(tmp_path / "templates.yaml")
    assert issue.path == "scriptConversion"
    assert issue.reason.startswith("SyntaxError")
    assert issue.reason.endswith("(line 2)")


def test_unknown_timezone(tmp_path: Path) -> None:
    br = (
        "{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust, parameters: {threshold: 5}, "
        "timezone: Mars/Olympus}"
    )
    issue = only_issue(write_tenant(tmp_path, businessrules_yaml=br), "br1")
    assert (issue.path, issue.reason) == ("timezone", "unknown timezone 'Mars/Olympus'")


def _mismatched_trigger(tmp_path: Path) -> ConfigIssue:
    trigger = (
        "{kind: Trigger, id: hook, orgId: cust, name: H, triggerType: slack, "
        "config: {http: {endpoint: 'http://127.0.0.1/x'}}}"
    )
    return only_issue(write_tenant(tmp_path, triggers_yaml=trigger), "hook")


def test_trigger_config_key_must_match_trigger_type(tmp_path: Path) -> None:
    issue = _mismatched_trigger(tmp_path)
    assert issue.source == str(tmp_path / "triggers.yaml")
    assert issue.kind == "Trigger"
    assert issue.reason == (
        "config must hold exactly the key 'slack' (triggerType), found ['http']"
    )


def test_trigger_config_mismatch_names_a_field_path(tmp_path: Path) -> None:
    assert _mismatched_trigger(tmp_path).path in ("config", "triggerType", "config.slack")


def test_missing_script_file(tmp_path: Path) -> None:
    template = (
        "{kind: AssetTemplate, id: tpl, orgId: cust, name: T, "
        "scriptConversion: {file: nowhere/missing.js}}"
    )
    issues = issues_of(write_tenant(tmp_path, templates_yaml=template))
    unreadable = [i for i in issues if i.reason.startswith("cannot read script file")]
    assert len(unreadable) == 1
    (issue,) = unreadable
    assert (issue.source, issue.kind, issue.entity_id, issue.path) == (
        str(tmp_path / "templates.yaml"), "AssetTemplate", "tpl", "scriptConversion",
    )  # fmt: skip
    assert "missing.js" in issue.reason


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    root = write_tenant(
        tmp_path,
        broken_yaml="id: [unclosed\n",
        gizmo_yaml="{kind: Gizmo, id: g1}",
        businessrules_yaml="{kind: BusinessRule, id: br1, ruleId: r1, orgId: cust}",
        routegroups_yaml="{kind: RouteGroup, id: rg, orgId: cust, name: RG, "
        "routers: [{kind: trigger, trigger: {triggerId: ghost}}]}",
        cycle_yaml="{kind: Organization, id: me, name: Me, type: site, parentId: me}",
    )
    issues = issues_of(root)
    found = {(Path(i.source).name, i.path) for i in issues}
    assert found == {
        ("broken.yaml", ""),
        ("gizmo.yaml", "kind"),
        ("businessrules.yaml", "parameters"),
        ("routegroups.yaml", "routers[0].trigger.triggerId"),
        ("cycle.yaml", "parentId"),
    }


def test_a_document_source_knows_its_fields_lines_and_pickles_as_the_file(tmp_path: Path) -> None:
    import pickle

    from eventray.pipeline.loader import DocumentSource, read_documents

    file = tmp_path / "two.yaml"
    file.write_text("kind: Organization\nid: a\n---\n- kind: Rule\n  id: r\n  when:\n"
                    "    items:\n      - {type: condition, data: {operator: eq}}\n")  # fmt: skip
    _, (rule, _) = read_documents([file], [])
    assert isinstance(rule, DocumentSource) and rule == str(file)
    assert (rule.line, rule.column) == (4, 3)
    assert rule.mark("when.items[0].data.operator") == (8, 34)
    assert rule.mark("when.items[0].data.nothing.here") == (8, 27)  # the nearest enclosing
    assert rule.mark("") == (4, 3)
    copied = pickle.loads(pickle.dumps(rule))  # into a Ray actor: the plain file name
    assert type(copied) is str and copied == str(file)
