"""The entity kinds as the management API names them, and who owns a document.

Paths use plural slugs (``/assets``, ``/route-groups``); the CLI also takes the kind's own name
(``Asset``) or its singular (``asset``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from eventray.pipeline.management.errors import NotFound

__all__ = ["KIND_OF_SLUG", "SLUGS", "kind_named", "owner_org"]

SLUGS: Final[dict[str, str]] = {
    "Organization": "organizations",
    "DataSource": "data-sources",
    "AssetTemplate": "asset-templates",
    "Asset": "assets",
    "RouteGroup": "route-groups",
    "Trigger": "triggers",
    "Rule": "rules",
    "BusinessRule": "business-rules",
}
"""Each kind's path segment."""

KIND_OF_SLUG: Final[dict[str, str]] = {slug: kind for kind, slug in SLUGS.items()}


def kind_named(name: str) -> str:
    """The kind a user means: ``Asset``, ``asset``, ``assets``, ``route-groups``,
    ``routegroup``...

    Raises:
        NotFound: no kind has that name.
    """
    squashed = name.replace("-", "").replace("_", "").lower()
    for kind, slug in SLUGS.items():
        if squashed in (kind.lower(), slug.replace("-", "")):
            return kind
    raise NotFound(f"unknown kind {name!r}; expected one of {', '.join(SLUGS.values())}")


def owner_org(kind: str, doc: Mapping[str, Any]) -> str | None:
    """The organization a document belongs to, for scope: an organization is its own; a rule
    without ``orgId`` (a system rule) belongs to none; anything else to its ``orgId``."""
    if kind == "Organization":
        return str(doc.get("id", ""))
    org = doc.get("orgId")
    return str(org) if isinstance(org, str) else None
