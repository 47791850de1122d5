"""Organizations: the tenant tree that scopes everything by ``orgId`` and ``pathKey``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventray.pipeline.models.base import Entity

__all__ = ["OrgType", "Organization"]

OrgType = Literal["vendor", "customer", "site", "building", "floor", "zone"]


class Organization(Entity):
    """A tenant node.

    ``pathKey`` and ``depth`` are computed by :class:`pipeline.catalog.Catalog` from the tree
    (parent's pathKey + "/" + a 4-digit code); values given in a file are overwritten. ``code``
    pins this node's segment so pathKeys stay stable when siblings are added; without it the
    segment is the 1-based position among siblings in load order.
    """

    kind: Literal["Organization"] = "Organization"
    name: str
    type: OrgType
    parent_id: str | None = None
    enabled: bool = True
    code: int | None = Field(default=None, ge=1, le=9999)
    path_key: str = ""
    depth: int = 0
