"""The catalog: one consistent, validated snapshot of every entity.

Building it checks what single entities cannot: unique ids per kind, the organization tree
(unknown parents, cycles) and its pathKeys, and every cross-reference (an asset's template and
route groups, a route group's triggers, a rule's exec triggers, a business rule's rule and its
visibility, parameters, compilation). Problems are collected, never raised one by one, and
name the file, the field path and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from eventray.pipeline.errors import (
    ConfigError,
    ConfigIssue,
    RuleError,
    ScriptError,
    TemplateRenderError,
)
from eventray.pipeline.loader import entity_from_dict, issue_at, read_entities
from eventray.pipeline.models import (
    Asset,
    AssetTemplate,
    BusinessRule,
    DataSource,
    Entity,
    Organization,
    RouteGroup,
    Rule,
    Trigger,
)
from eventray.pipeline.models.org import RETENTION_TABLES
from eventray.pipeline.models.rule import ExecAction
from eventray.pipeline.ports import ConfigStore
from eventray.pipeline.routing import RouteTable
from eventray.pipeline.rules.compiler import compile_business_rule
from eventray.pipeline.rules.engine import RuleSet
from eventray.pipeline.templating import compile_template

__all__ = [
    "Catalog",
    "build_catalog",
    "catalog_from_store",
    "load_catalog",
    "place_organizations",
    "template_script_issues",
]

E = TypeVar("E", bound=Entity)


@dataclass(frozen=True)
class Catalog:
    """Every entity by id, per kind, plus derived indexes."""

    orgs: dict[str, Organization] = field(default_factory=dict)
    data_sources: dict[str, DataSource] = field(default_factory=dict)
    templates: dict[str, AssetTemplate] = field(default_factory=dict)
    assets: dict[str, Asset] = field(default_factory=dict)
    route_groups: dict[str, RouteGroup] = field(default_factory=dict)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    business_rules: dict[str, BusinessRule] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    revision: int = 0
    """The config store revision it was built from (0: not from a store)."""

    @property
    def org_paths(self) -> dict[str, str]:
        return {org_id: org.path_key for org_id, org in self.orgs.items()}

    def route_table(self) -> RouteTable:
        return RouteTable(self.route_groups.values())

    def rule_set(self) -> RuleSet:
        return RuleSet(self.rules, self.business_rules.values(), self.org_paths,
                       org_timezones=self.org_timezones())  # fmt: skip

    def org_timezones(self) -> dict[str, tzinfo]:
        """Each organization's timezone: its own, else the nearest ancestor's (organizations
        with neither are left out)."""
        out: dict[str, tzinfo] = {}
        for org_id in self.orgs:
            for ancestor in self.lineage(org_id):
                name = self.orgs[ancestor].timezone
                if name is not None:
                    out[org_id] = ZoneInfo(name)
                    break
        return out

    def org_retention_days(self) -> dict[str, dict[str, int]]:
        """Per organization and stored table, the days its ``retentionDays`` (or the nearest
        ancestor's, per group of tables) keeps rows; tables none of them sets are left out."""
        out: dict[str, dict[str, int]] = {}
        for org_id in self.orgs:
            tables: dict[str, int] = {}
            for group, names in RETENTION_TABLES.items():
                for ancestor in self.lineage(org_id):
                    given = self.orgs[ancestor].retention_days
                    days = getattr(given, group) if given is not None else None
                    if days is not None:
                        tables.update(dict.fromkeys(names, days))
                        break
            if tables:
                out[org_id] = tables
        return out

    def is_ancestor_or_self(self, ancestor_id: str, org_id: str) -> bool:
        ancestor, org = self.orgs.get(ancestor_id), self.orgs.get(org_id)
        if ancestor is None or org is None:
            return False
        return org.path_key == ancestor.path_key or org.path_key.startswith(ancestor.path_key + "/")

    def lineage(self, org_id: str) -> tuple[str, ...]:
        """``org_id`` then its ancestors up to the root (empty for an unknown org)."""
        chain: list[str] = []
        org = self.orgs.get(org_id)
        while org is not None and org.id not in chain:
            chain.append(org.id)
            org = self.orgs.get(org.parent_id) if org.parent_id is not None else None
        return tuple(chain)

    def may_dispatch(self, trigger: Trigger, org_id: str) -> bool:
        """Whether configuration of ``org_id`` may use ``trigger``: its own, or an ancestor's
        shared one."""
        return trigger.org_id == org_id or (
            trigger.shared and self.is_ancestor_or_self(trigger.org_id, org_id)
        )


class _Builder:
    def __init__(
        self,
        entities: Sequence[tuple[str, Entity]],
        *,
        compile_scripts: bool,
        compile_rules: Callable[[BusinessRule], bool] | None = None,
    ) -> None:
        self.issues: list[ConfigIssue] = []
        self.sources: dict[tuple[str, str], str] = {}
        self.compile_scripts = compile_scripts
        self.compile_rules = compile_rules
        self.by_kind: dict[str, dict[str, Entity]] = {}
        for source, entity in entities:
            kind = type(entity).__name__
            bucket = self.by_kind.setdefault(kind, {})
            if entity.id in bucket:
                self.issue(
                    source,
                    "id",
                    f"duplicate {kind} id (also in {self.sources[(kind, entity.id)]})",
                    entity,
                )
                continue
            bucket[entity.id] = entity
            self.sources[(kind, entity.id)] = source

    def issue(self, source: str, path: str, reason: str, entity: Entity) -> None:
        self.issues.append(issue_at(source, path, reason, type(entity).__name__, entity.id))

    def flag(self, entity: Entity, path: str, reason: str) -> None:
        self.issue(self.sources[(type(entity).__name__, entity.id)], path, reason, entity)

    def kind(self, cls: type[E]) -> dict[str, E]:
        return self.by_kind.get(cls.__name__, {})  # type: ignore[return-value]

    def organizations(self) -> dict[str, Organization]:
        orgs = self.kind(Organization)
        children: dict[str | None, list[Organization]] = {}
        for org in orgs.values():
            parent = org.parent_id
            if parent is not None and parent not in orgs:
                self.flag(org, "parentId", f"unknown organization {parent!r}")
                continue
            children.setdefault(parent, []).append(org)
        placed: dict[str, Organization] = {}
        refused: set[str] = set()

        def place(parent_path: str, depth: int, nodes: list[Organization]) -> None:
            owners: dict[int, str] = {}
            for node in nodes:
                if node.code is not None:
                    if node.code in owners:
                        self.flag(node, "code", f"code {node.code} is also used by sibling "
                                  f"{owners[node.code]!r}: pathKeys must be unique")  # fmt: skip
                        refused.add(node.id)
                        continue
                    owners[node.code] = node.id
            ordinal = 0
            for node in nodes:
                if node.code is not None and owners.get(node.code) != node.id:
                    continue  # refused above
                if node.code is None:
                    ordinal += 1
                    while ordinal in owners:
                        ordinal += 1
                    code = ordinal
                else:
                    code = node.code
                path = f"{parent_path}/{code:04d}" if parent_path else f"{code:04d}"
                placed[node.id] = node.model_copy(update={"path_key": path, "depth": depth})
                place(path, depth + 1, children.get(node.id, []))

        place("", 0, children.get(None, []))
        for org in orgs.values():
            if org.id in placed or org.id in refused or org.parent_id not in orgs:
                continue
            seen, current = {org.id}, orgs[org.parent_id]
            while (
                current.parent_id is not None
                and current.parent_id in orgs
                and current.id not in seen
            ):
                seen.add(current.id)
                current = orgs[current.parent_id]
            if current.id in seen:
                self.flag(org, "parentId", "organization is part of a parent cycle")
            elif current.parent_id is not None and current.parent_id not in orgs:
                self.flag(org, "parentId", f"ancestor {current.id!r} has an unknown parent "
                          f"{current.parent_id!r}")  # fmt: skip
            else:
                self.flag(org, "parentId", f"ancestor {current.id!r} could not be placed")
        return placed

    def need(
        self, entity: Entity, path: str, ref: str | None, pool: dict[str, E], what: str
    ) -> E | None:
        if ref is None:
            return None
        found = pool.get(ref)
        if found is None:
            self.flag(entity, path, f"unknown {what} {ref!r}")
        return found

    def build(self) -> Catalog:
        orgs = self.organizations()
        templates, assets = self.kind(AssetTemplate), self.kind(Asset)
        groups, triggers = self.kind(RouteGroup), self.kind(Trigger)
        rules, brs = self.kind(Rule), self.kind(BusinessRule)
        sources = self.kind(DataSource)
        catalog = Catalog(orgs, dict(sources), dict(templates), dict(assets), dict(groups),
                          dict(triggers), dict(rules), dict(brs), self.sources)  # fmt: skip
        owned: Iterable[Entity] = [*sources.values(), *templates.values(), *assets.values(),
                                   *groups.values(), *triggers.values(), *brs.values()]  # fmt: skip
        for entity in owned:
            self.need(entity, "orgId", entity.org_id, orgs, "organization")  # type: ignore[attr-defined]
        for ds in sources.values():
            fixed = self.need(
                ds, "assetBind.fixedAssetId", ds.asset_bind.fixed_asset_id, assets, "asset"
            )
            # A data source speaks for its organization's subtree only: fixed to another
            # tenant's asset, it would inject events into that tenant's stream.
            if fixed is not None and not catalog.is_ancestor_or_self(ds.org_id, fixed.org_id):
                self.flag(ds, "assetBind.fixedAssetId", f"asset {fixed.id!r} of organization "
                          f"{fixed.org_id!r} is neither {ds.org_id!r}'s nor below it")  # fmt: skip
        if self.compile_scripts:
            for tpl in templates.values():
                self.check_scripts(tpl)
        uuids: dict[str, str] = {}
        for asset in assets.values():
            template = self.need(
                asset, "templateId", asset.template_id, templates, "asset template"
            )
            if (
                template is not None
                and template.org_id != asset.org_id
                and not (
                    template.shared and catalog.is_ancestor_or_self(template.org_id, asset.org_id)
                )
            ):
                self.flag(asset, "templateId", f"template {template.id!r} of organization "
                          f"{template.org_id!r} is not shared with {asset.org_id!r}")  # fmt: skip
            for index, group_id in enumerate(asset.route_group_ids):
                group = self.need(asset, f"routeGroupIds[{index}]", group_id, groups, "route group")
                if group is not None and not catalog.is_ancestor_or_self(
                    group.org_id, asset.org_id
                ):
                    self.flag(asset, f"routeGroupIds[{index}]", f"route group {group.id!r} of "
                              f"organization {group.org_id!r} is neither {asset.org_id!r}'s nor "
                              "an ancestor's")  # fmt: skip
            if asset.asset_uuid in uuids:
                self.flag(
                    asset, "assetUUID", f"assetUUID also used by asset {uuids[asset.asset_uuid]!r}"
                )
            uuids[asset.asset_uuid] = asset.id
        for group in groups.values():
            for index, router in enumerate(group.routers):
                if router.trigger is not None:
                    self.usable_trigger(catalog, group, f"routers[{index}].trigger.triggerId",
                                        router.trigger.trigger_id, group.org_id)  # fmt: skip
        for trigger in triggers.values():
            for name, value in trigger.settings():
                if isinstance(value, str):
                    try:
                        compile_template(value)
                    except TemplateRenderError as exc:
                        self.flag(trigger, f"config.{trigger.trigger_type}.{name}", str(exc))
        for rule in rules.values():
            if rule.org_id is not None:
                self.need(rule, "orgId", rule.org_id, orgs, "organization")
            for index, action in enumerate(rule.actions):
                if not isinstance(action, ExecAction):
                    continue
                path = f"actions[{index}].triggerId"
                if rule.org_id is None:
                    self.need(rule, path, action.trigger_id, triggers, "trigger")
                else:  # a system rule's triggers are checked for each business rule using it
                    self.usable_trigger(catalog, rule, path, action.trigger_id, rule.org_id)
        for br in brs.values():
            found = self.need(br, "ruleId", br.rule_id, rules, "rule")
            if found is None:
                continue
            rule = found
            if not (rule.system or rule.org_id == br.org_id or (
                rule.shared and rule.org_id is not None and catalog.is_ancestor_or_self(rule.org_id, br.org_id)
            )):  # fmt: skip
                self.flag(br, "ruleId", f"rule {rule.id!r} of organization {rule.org_id!r} is "
                          f"not shared with {br.org_id!r}")  # fmt: skip
            elif rule.org_id != br.org_id:
                for index, action in enumerate(rule.actions):
                    target = (
                        triggers.get(action.trigger_id) if isinstance(action, ExecAction) else None
                    )
                    if target is not None and not catalog.may_dispatch(target, br.org_id):
                        self.flag(br, "ruleId", f"rule {rule.id!r} dispatches trigger "
                                  f"{target.id!r} (actions[{index}]) of organization "
                                  f"{target.org_id!r}, which is not shared with {br.org_id!r}")  # fmt: skip
            if self.compile_rules is not None and not self.compile_rules(br):
                continue
            try:
                compile_business_rule(rule, br)
            except RuleError as exc:
                self.flag(br, exc.path or "parameters", str(exc))
        from eventray.pipeline.mqtt import mqtt_problems  # it builds on this module

        for entity, path, reason in mqtt_problems(catalog):
            self.flag(entity, path, reason)
        return catalog

    def usable_trigger(
        self, catalog: Catalog, entity: Entity, path: str, ref: str, org_id: str
    ) -> None:
        """``ref`` names a trigger that configuration of ``org_id`` may dispatch."""
        trigger = self.need(entity, path, ref, catalog.triggers, "trigger")
        if trigger is not None and not catalog.may_dispatch(trigger, org_id):
            self.flag(entity, path, f"trigger {trigger.id!r} of organization "
                      f"{trigger.org_id!r} is not shared with {org_id!r}")  # fmt: skip

    def check_scripts(self, template: AssetTemplate) -> None:
        source = self.sources[(type(template).__name__, template.id)]
        self.issues.extend(template_script_issues(template, source))


def template_script_issues(template: AssetTemplate, source: str) -> list[ConfigIssue]:
    """What compiling ``template``'s scripts refuses (QuickJS), as issues of ``source``."""
    from eventray.pipeline.scripts.bundle import bundle_for_template  # QuickJS only when asked
    from eventray.pipeline.scripts.runner import ScriptRunner

    try:
        ScriptRunner(bundle_for_template(template))
    except ScriptError as exc:
        fields = {"decode": "scriptProcessor", "validate": "scriptValidator",
                  "transform": "scriptConversion"}  # fmt: skip
        where = f" (line {exc.line})" if exc.line is not None else ""
        return [issue_at(source, fields.get(exc.stage, exc.stage), f"{exc.message}{where}",
                         "AssetTemplate", template.id)]  # fmt: skip
    return []


def place_organizations(orgs: Sequence[Organization]) -> dict[str, Organization]:
    """The organizations that take a place in the tree, with their ``pathKey`` and ``depth``
    (as :func:`build_catalog` computes them); those it would refuse are left out, not raised."""
    return _Builder([("", org) for org in orgs], compile_scripts=False).organizations()


def build_catalog(
    entities: Sequence[tuple[str, Entity]],
    *,
    compile_scripts: bool = True,
    compile_rules: Callable[[BusinessRule], bool] | None = None,
) -> Catalog:
    """Check and index ``entities``; raises :class:`ConfigError` listing every problem.

    ``compile_rules`` picks the business rules whose compilation is checked (default: all;
    compiling one costs ~6 ms, so the management API checks only those a change touches)."""
    builder = _Builder(entities, compile_scripts=compile_scripts, compile_rules=compile_rules)
    catalog = builder.build()
    if builder.issues:
        raise ConfigError(builder.issues)
    return catalog


def load_catalog(paths: Iterable[Path | str], *, compile_scripts: bool = True) -> Catalog:
    """Read every entity under ``paths`` and build the catalog, or raise ConfigError."""
    issues: list[ConfigIssue] = []
    entities = read_entities([Path(p) for p in paths], issues)
    if issues:
        # Still cross-check what did parse, so one run reports as much as possible.
        builder = _Builder(entities, compile_scripts=compile_scripts)
        builder.build()
        raise ConfigError(issues + builder.issues)
    return build_catalog(entities, compile_scripts=compile_scripts)


def catalog_from_store(store: ConfigStore, *, compile_scripts: bool = False) -> tuple[Catalog, int]:
    """The catalog a config store holds now, with its revision.

    Raises:
        ConfigError: a stored document is invalid or the entities do not build (every problem
            listed).
    """
    revision = store.revision()
    issues: list[ConfigIssue] = []
    entities: list[tuple[str, Entity]] = []
    for document in store.documents():
        entity = entity_from_dict("config store", document, issues)
        if entity is not None:
            entities.append(("config store", entity))
    if issues:
        raise ConfigError(issues)
    catalog = build_catalog(entities, compile_scripts=compile_scripts)
    return replace(catalog, revision=revision), revision
