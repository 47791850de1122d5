"""Organizations: the tenant tree that scopes everything by ``orgId`` and ``pathKey``."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from eventray.pipeline.models.base import Entity, Model

__all__ = ["RETENTION_TABLES", "IngestQuota", "OrgType", "Organization", "RetentionDays"]

OrgType = Literal["vendor", "customer", "site", "building", "floor", "zone"]


class IngestQuota(Model):
    """What the ingress accepts from an organization and its sub-organizations together."""

    events_per_second: float = Field(gt=0)
    burst: float | None = Field(
        default=None, ge=1, description="default: a tenth of a second's worth"
    )


RETENTION_TABLES: dict[str, tuple[str, ...]] = {
    "events": ("events",),
    "events_raw": ("events_raw",),
    "logs": ("logs_script", "logs_router", "logs_rule", "logs_capture", "logs_trigger"),
    "dlq": ("dlq",),
}
"""The stored tables each ``retentionDays`` field sets."""


class RetentionDays(Model):
    """Days this organization's rows are kept, per group of tables (CONTRACTS.md); a group not
    given is inherited from the parent, then from the settings."""

    events: int | None = Field(default=None, ge=1, le=65535)
    events_raw: int | None = Field(default=None, ge=1, le=65535, alias="events_raw")
    logs: int | None = Field(default=None, ge=1, le=65535)
    dlq: int | None = Field(default=None, ge=1, le=65535)


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
    timezone: str | None = Field(
        default=None,
        description="IANA name; a business rule's `timezone: dynamic` reads it (or the nearest "
        "ancestor's) before the event's metadata.timezone",
    )
    retention_days: RetentionDays | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(f"unknown timezone {value!r} (an IANA name such as "
                                 "Europe/Berlin)") from None  # fmt: skip
        return value
