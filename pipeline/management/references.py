"""What names what: the references of an entity (for the scope check of a write) and the
referrers of one (for a delete, refused while anything still names it)."""

from __future__ import annotations

from eventray.pipeline.management.view import ConfigView
from eventray.pipeline.models import Asset, BusinessRule, DataSource, Entity, RouteGroup, Rule
from eventray.pipeline.models.rule import ExecAction

__all__ = ["references", "referrers"]

Key = tuple[str, str]


def references(entity: Entity) -> list[tuple[str, str, str]]:
    """``(field path, kind, id)`` of every entity ``entity`` names."""
    out: list[tuple[str, str, str]] = []
    if isinstance(entity, Asset):
        out.append(("templateId", "AssetTemplate", entity.template_id))
        out += [
            (f"routeGroupIds[{i}]", "RouteGroup", g) for i, g in enumerate(entity.route_group_ids)
        ]
    elif isinstance(entity, DataSource) and entity.asset_bind.fixed_asset_id is not None:
        out.append(("assetBind.fixedAssetId", "Asset", entity.asset_bind.fixed_asset_id))
    elif isinstance(entity, RouteGroup):
        out += [
            (f"routers[{i}].trigger.triggerId", "Trigger", r.trigger.trigger_id)
            for i, r in enumerate(entity.routers)
            if r.trigger is not None
        ]
    elif isinstance(entity, Rule):
        out += [
            (f"actions[{i}].triggerId", "Trigger", a.trigger_id)
            for i, a in enumerate(entity.actions)
            if isinstance(a, ExecAction)
        ]
    elif isinstance(entity, BusinessRule):
        out.append(("ruleId", "Rule", entity.rule_id))
    return out


def referrers(view: ConfigView, kind: str, entity_id: str) -> list[tuple[Key, str]]:
    """Who names ``kind`` ``entity_id``: ``((kind, id), field path)`` of each."""
    out: list[tuple[Key, str]] = []
    if kind == "Organization":
        for key, doc in view.docs.items():
            if key[0] == "Organization" and doc.get("parentId") == entity_id:
                out.append((key, "parentId"))
            elif key[0] != "Organization" and doc.get("orgId") == entity_id:
                out.append((key, "orgId"))
        return out
    for key in view.docs:
        if key[0] not in ("Asset", "DataSource", "RouteGroup", "Rule", "BusinessRule"):
            continue
        entity = view.entity(key)
        if entity is None:
            continue
        for path, target, ref in references(entity):
            if (target, ref) == (kind, entity_id):
                out.append((key, path))
    return out
