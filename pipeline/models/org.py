"""Organizations: the tenant tree that scopes everything by ``orgId`` and ``pathKey``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventray.pipeline.models.base import Entity, Model

__all__ = ["IngestQuota", "OrgType", "Organization"]

OrgType = Literal["vendor", "customer", "site", "building", "floor", "zone"]


class IngestQuota(Model):
    """What the ingress accepts from an organization and its sub-organizations together."""

    events_per_second: float = Field(gt=0)
    burst: float | None = Field(
        default=None, ge=1, description="default: a tenth of a second's worth"
    )


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
    ingest_quota: IngestQuota | None = None
