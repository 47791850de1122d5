"""Reading what was stored: the service the CLI and the management API call.

Two halves, so the store process only ever runs SQL:

- **Planning**, in the caller's process, with the catalog: :func:`plan_event_query` and
  :func:`plan_log_query` check the organization filter against the caller's scope, resolve
  ``field op value`` expressions through the templates (EVA fields) or the rules (capture
  fields) the scope can see, and return a validated, frozen query. Everything a user can get
  wrong is refused here as :class:`~eventray.pipeline.errors.InvalidQuery` (an API's 422;
  its ``param`` names the input).
- **Running**, wherever the store is: :func:`~eventray.pipeline.storage.query.query_events`,
  :func:`~eventray.pipeline.storage.logs.query_logs` and
  :func:`~eventray.pipeline.storage.story.event_story` (the store actor's ``query_events``,
  ``query_logs`` and ``event_story``), and :func:`~eventray.pipeline.storage.export.export`
  for JSON lines, JSON and CSV.

Tenant scope: every query carries the caller's :class:`~eventray.pipeline.storage.scope.Scope`
and the SQL ANDs it to every filter, so no filter can read outside it. An organization filter
outside the scope is refused exactly like an unknown organization
(:class:`~eventray.pipeline.errors.UnknownOrganization`); any other filter that names another
tenant's things (an asset, a trigger, a tracker id) simply finds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import InvalidQuery
from eventray.pipeline.models import AssetTemplate, Organization, Rule
from eventray.pipeline.storage.fields import (
    CaptureFilter,
    resolve_capture_filters,
    resolve_eva_filters,
)
from eventray.pipeline.storage.logs import LOG_KINDS, LogQuery
from eventray.pipeline.storage.query import EventQuery
from eventray.pipeline.storage.scope import Scope, resolve_org

__all__ = [
    "catalog_root",
    "plan_event_query",
    "plan_log_query",
    "rules_in_view",
    "templates_in_view",
]


def _view(
    catalog: Catalog, scope: Scope, org_id: str | None, include_children: bool
) -> tuple[Organization | None, list[Organization]]:
    """The organization filter (checked against the scope) and every organization the query
    can return rows of."""
    if org_id:
        org = resolve_org(catalog, scope, org_id)
        if not include_children:
            return org, [org]
        narrowed = Scope(org.path_key)
        return org, narrowed.orgs(catalog)
    if include_children:
        raise InvalidQuery("children needs an organization", param="children")
    return None, scope.orgs(catalog)


def templates_in_view(catalog: Catalog, orgs: Sequence[Organization]) -> list[AssetTemplate]:
    """The templates whose events ``orgs`` can hold: those of their assets, and their own."""
    ids = {org.id for org in orgs}
    used = {a.template_id for a in catalog.assets.values() if a.org_id in ids}
    return [t for t in catalog.templates.values() if t.id in used or t.org_id in ids]


def rules_in_view(
    catalog: Catalog, orgs: Sequence[Organization], root: Organization | None
) -> list[Rule]:
    """The rules whose captures ``orgs`` can hold: rules of business rules deployed in them or
    above them (a business rule of an ancestor covers its children), and their own rules."""
    ids = {org.id for org in orgs}
    above = set(catalog.lineage(root.id)) if root is not None else set()
    used = {
        br.rule_id
        for br in catalog.business_rules.values()
        if br.org_id in ids or br.org_id in above
    }
    return [r for r in catalog.rules.values() if r.id in used or r.org_id in ids]


def plan_event_query(
    catalog: Catalog,
    scope: Scope,
    *,
    org_id: str | None = None,
    include_children: bool = False,
    asset_id: str | None = None,
    event_type: str | None = None,
    event_tracker_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    where: Sequence[str] = (),
    limit: int = 100,
    cursor: str | None = None,
) -> EventQuery:
    """A scoped, validated events query.

    Args:
        catalog: the current entities (organizations, templates, assets).
        scope: the caller's scope (a token's organization subtree, or the platform).
        org_id: only this organization (must be inside ``scope``); default: the whole scope.
        include_children: with ``org_id``: its subtree.
        asset_id, event_type, event_tracker_id: equality filters.
        since, until: ``since <= created < until`` (aware datetimes; naive means UTC).
        where: ``field op value`` expressions, all of which must hold: EVA fields by name
            (``temperature > -15``, ``"Door open" = true``) or id (``#4 = critical``).
        limit: rows per page, 1..10000.
        cursor: ``next_cursor`` of the previous page.

    Raises:
        InvalidQuery: anything the caller got wrong (:class:`UnknownOrganization` for an
            organization that is unknown or outside ``scope``).
    """
    org, orgs = _view(catalog, scope, org_id, include_children)
    eva, named = resolve_eva_filters(where, templates_in_view(catalog, orgs)) if where else ((), ())
    return EventQuery(
        org_id=org.id if org is not None else "",
        path_key=org.path_key if org is not None else "",
        include_children=include_children,
        asset_id=asset_id,
        event_type=event_type,
        since=since,
        until=until,
        event_tracker_id=event_tracker_id,
        eva=eva,
        named=named,
        limit=limit,
        cursor=cursor,
        scope=scope,
    )


def plan_log_query(
    catalog: Catalog,
    scope: Scope,
    kind: str,
    *,
    org_id: str | None = None,
    include_children: bool = False,
    asset_id: str | None = None,
    business_rule_id: str | None = None,
    rule_id: str | None = None,
    action_id: str | None = None,
    trigger_id: str | None = None,
    data_source_id: str | None = None,
    route_group_id: str | None = None,
    stage: str | None = None,
    success: bool | None = None,
    matched: bool | None = None,
    errored: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    event_tracker_id: str | None = None,
    where: Sequence[str] = (),
    limit: int = 100,
    cursor: str | None = None,
    newest_first: bool = False,
) -> LogQuery:
    """A scoped, validated query of one log table or the DLQ.

    Args:
        kind: ``rules``, ``captures``, ``triggers``, ``raw``, ``dlq``, ``scripts`` or
            ``routers`` (see :data:`~eventray.pipeline.storage.logs.LOG_KINDS`).
        where: captures only: ``field op value`` on capture fields, typed by the rules'
            ``captureFields`` (``temperature > -15``).
        newest_first: descending time order.
        (the rest as :class:`~eventray.pipeline.storage.logs.LogQuery`; a filter the table
        does not have is refused.)

    Raises:
        InvalidQuery: as :func:`plan_event_query`.
    """
    table = LOG_KINDS.get(kind)
    if table is None:
        raise InvalidQuery(
            f"unknown log kind {kind!r}; one of {', '.join(LOG_KINDS)}", param="kind"
        )
    org, orgs = _view(catalog, scope, org_id, include_children)
    captures: tuple[CaptureFilter, ...] = ()
    if where:
        if table != "logs_capture":
            raise InvalidQuery("field filters (where) apply to captures only", param="where")
        root = org if org is not None else catalog_root(catalog, scope)
        captures = resolve_capture_filters(where, rules_in_view(catalog, orgs, root))
    return LogQuery(
        table,
        scope,
        org_id=org.id if org is not None else "",
        path_key=org.path_key if org is not None else "",
        include_children=include_children,
        asset_id=asset_id,
        business_rule_id=business_rule_id,
        rule_id=rule_id,
        action_id=action_id,
        trigger_id=trigger_id,
        data_source_id=data_source_id,
        route_group_id=route_group_id,
        stage=stage,
        success=success,
        matched=matched,
        errored=errored,
        since=since,
        until=until,
        event_tracker_id=event_tracker_id,
        captures=captures,
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
    )


def catalog_root(catalog: Catalog, scope: Scope) -> Organization | None:
    """The organization at the top of ``scope`` (None for the platform)."""
    if scope.path_key is None:
        return None
    return next((o for o in catalog.orgs.values() if o.path_key == scope.path_key), None)
