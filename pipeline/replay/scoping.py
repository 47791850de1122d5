"""The caller's scope against the configuration: which organizations a request may name."""

from __future__ import annotations

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.replay.model import OutOfScope, Scope

__all__ = ["orgs_under", "path_of_org"]


def path_of_org(scope: Scope, catalog: Catalog, org_id: str) -> str:
    """The pathKey of ``org_id`` when the caller may name it.

    Raises:
        OutOfScope: it does not exist or is outside ``scope`` (one answer for both).
    """
    org = catalog.orgs.get(org_id)
    if org is None or not scope.covers(org.path_key):
        raise OutOfScope(f"no organization {org_id!r} in your scope")
    return org.path_key


def orgs_under(catalog: Catalog, path_key: str, *, children: bool) -> tuple[str, ...]:
    """The organization with ``path_key`` and, with ``children``, every one below it, sorted
    by pathKey."""
    found = [
        org
        for org in catalog.orgs.values()
        if org.path_key == path_key or (children and org.path_key.startswith(path_key + "/"))
    ]
    return tuple(org.id for org in sorted(found, key=lambda org: org.path_key))
