"""A caller's tenant scope: the organizations whose stored rows it may read.

A principal belongs to one organization and sees that organization's subtree: every row whose
``path_key`` is the organization's pathKey or starts with it plus ``/``. Every stored table
carries ``path_key`` (see :mod:`eventray.pipeline.storage.schema`), so the scope is one SQL
condition, the same for every table, ANDed to whatever else a query asks: no filter can widen
it. The pathKey travels as a server-side parameter like every other value.

Rows keep the pathKey their organization had when they were written: moving an organization
in the tree does not move its history into the new parent's scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import InvalidQuery, UnknownOrganization
from eventray.pipeline.models import Organization

__all__ = ["Scope", "resolve_org"]

# The catalog writes pathKeys as 4-digit codes joined by "/" (see pipeline/catalog.py).
_PATH_KEY = re.compile(r"[0-9]{4}(?:/[0-9]{4})*")


@dataclass(frozen=True, slots=True)
class Scope:
    """The subtree a caller may read.

    Args:
        path_key: the caller's organization's pathKey; ``None`` is the whole platform (every
            row, including rows of no known organization), for the local administrator only.
            Build it with :meth:`platform`, so it is never the accident of an empty string.
    """

    path_key: str | None

    def __post_init__(self) -> None:
        if self.path_key is not None and not _PATH_KEY.fullmatch(self.path_key):
            raise InvalidQuery(f"not a pathKey: {self.path_key!r}", param="scope")

    @classmethod
    def platform(cls) -> Scope:
        """Every row of every organization: the root administrator's scope."""
        return cls(None)

    @classmethod
    def of_org(cls, catalog: Catalog, org_id: str) -> Scope:
        """The subtree of ``org_id`` (a token's organization).

        Raises:
            UnknownOrganization: no such organization in ``catalog``.
        """
        org = catalog.orgs.get(org_id)
        if org is None or not org.path_key:
            raise UnknownOrganization(org_id)
        return cls(org.path_key)

    def contains(self, path_key: str) -> bool:
        """Whether a row (or an organization) with ``path_key`` is inside the scope."""
        if self.path_key is None:
            return True
        return path_key == self.path_key or path_key.startswith(self.path_key + "/")

    def orgs(self, catalog: Catalog) -> list[Organization]:
        """The organizations of ``catalog`` inside the scope."""
        return [org for org in catalog.orgs.values() if self.contains(org.path_key)]

    def condition(self) -> tuple[str, dict[str, Any]]:
        """``(sql, parameters)`` restricting a table's rows to the scope ("" for the platform).

        Parameters are named ``scope_*``; no other builder uses that prefix.
        """
        if self.path_key is None:
            return "", {}
        return (
            "(path_key = {scope_path:String} OR startsWith(path_key, {scope_prefix:String}))",
            {"scope_path": self.path_key, "scope_prefix": self.path_key + "/"},
        )


def resolve_org(catalog: Catalog, scope: Scope, org_id: str) -> Organization:
    """The organization a filter names, if the scope may read it.

    Raises:
        UnknownOrganization: unknown, or outside ``scope``; the two are indistinguishable on
            purpose, so a caller cannot learn that another tenant's organization exists.
    """
    org = catalog.orgs.get(org_id)
    if org is None or not org.path_key or not scope.contains(org.path_key):
        raise UnknownOrganization(org_id)
    return org
