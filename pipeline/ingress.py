"""HTTP ingestion decisions (CONTRACTS.md "HTTP ingestion"), independent of any web framework.

The ingress actor parses the request, asks :class:`IngressPolicy` what to do, publishes what
was accepted and answers with the status decided here. Statuses: 201 accepted (after the
stream acknowledged), 400 not a JSON object, 401 authentication failed (the attempt is kept
for ``events_raw``), 403 data source disabled, 404 unknown data source, 413 body too large,
429/503 with ``Retry-After`` under backpressure (decided by the actor, which sees the stream).

Accepted events are partitioned by the *asset's* organization when the body binds to an asset
(so per-org order and single-writer state hold whatever data source an event came through),
else by the data source's organization; the lane binds again and sends unbindable events to
the DLQ, so nothing accepted is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eventray.pipeline.auth import authenticate
from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.models import DataSource
from eventray.pipeline.partitioning import partition_of, subject_for

__all__ = ["Accepted", "IngressPolicy", "Refused", "new_tracker_id"]

HEADER_SOURCE = "Eventray-Data-Source"
HEADER_RECEIVED = "Eventray-Received-At"
HEADER_ORG = "Eventray-Org"


def new_tracker_id() -> str:
    """An eventTrackerId: random, URL-safe, unique across processes."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event to publish: its id, subject and the message headers the lane reads."""

    event_tracker_id: str
    subject: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal: the status, a message for the client, and what to keep of it (401s)."""

    status: int
    error: str
    data_source_id: str = ""
    org_id: str = ""
    event_tracker_id: str = ""
    body: bytes = b""
    keep: bool = False


class IngressPolicy:
    """Decides each request against one catalog snapshot.

    Args:
        catalog: entities (replace the policy when the catalog changes).
        partitions: number of stream partitions.
        subject_prefix: stream subject prefix (``{prefix}.p{n}``).
        max_body_bytes: larger bodies get 413.
    """

    def __init__(
        self, catalog: Catalog, *, partitions: int, subject_prefix: str, max_body_bytes: int
    ) -> None:
        self.catalog = catalog
        self.partitions = partitions
        self.subject_prefix = subject_prefix
        self.max_body_bytes = max_body_bytes
        self.binder = AssetBinder(catalog)

    def source(
        self,
        data_source_id: str | None,
        *,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        client_ip: str,
        body: bytes,
    ) -> DataSource | Refused:
        """The data source if the request may proceed, else the refusal (404/403/401)."""
        if not data_source_id:
            return Refused(404, "missing ?ds= (the data source id)")
        source = self.catalog.data_sources.get(data_source_id)
        if source is None:
            return Refused(404, f"unknown data source {data_source_id!r}")
        if not source.enabled:
            return Refused(
                403, f"data source {data_source_id!r} is disabled", source.id, source.org_id
            )
        result = authenticate(source.auth, headers=headers, query=query, client_ip=client_ip)
        if not result.ok:
            return Refused(
                401,
                result.reason,
                source.id,
                source.org_id,
                new_tracker_id(),
                body[: self.max_body_bytes],
                keep=True,
            )
        return source

    def accept(
        self, source: DataSource, item: Any, *, received_at: datetime | None = None
    ) -> Accepted | Refused:
        """One JSON value (already parsed) from an authenticated request."""
        if not isinstance(item, dict):
            return Refused(400, "body must be a JSON object", source.id, source.org_id)
        body = orjson.dumps(item)
        if len(body) > self.max_body_bytes:
            return Refused(
                413, f"event larger than {self.max_body_bytes} bytes", source.id, source.org_id
            )
        asset = self.binder.bind(source, item)
        org_id = source.org_id if isinstance(asset, str) else asset.org_id
        tracker = new_tracker_id()
        when = (received_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
        subject = subject_for(self.subject_prefix, partition_of(org_id, self.partitions))
        headers = {HEADER_SOURCE: source.id, HEADER_RECEIVED: when, HEADER_ORG: org_id}
        return Accepted(tracker, subject, body, headers)
