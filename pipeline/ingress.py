"""HTTP ingestion decisions (CONTRACTS.md "HTTP ingestion"), independent of any web framework.

The ingress actor parses the request, asks :class:`IngressPolicy` what to do, publishes what
was accepted and answers with the status decided here. Statuses: 201 accepted (after the
stream acknowledged), 400 not a JSON object, 401 authentication failed (the attempt is kept
for ``events_raw``), 403 data source disabled, 404 unknown data source, 413 body too large,
429/503 with ``Retry-After`` under backpressure (decided by the actor, which sees the stream),
503 with ``Retry-After`` when an OAuth2 data source's key set cannot be fetched (not kept: the
client did nothing wrong and will send it again).

Accepted events are partitioned by the *asset's* organization when the body binds to an asset
(so per-org order and single-writer state hold whatever data source an event came through),
else by the data source's organization; the lane binds again and sends unbindable events to
the DLQ, so nothing accepted is lost.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from eventray.pipeline.auth import authenticate
from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ingest_tokens import IngestTokens
from eventray.pipeline.jwks import JwksCache
from eventray.pipeline.models import DataSource
from eventray.pipeline.models.datasource import ApiKeyAuth, JwtAuth, OAuth2Auth
from eventray.pipeline.mqtt import tracker_id_of
from eventray.pipeline.partitioning import partition_of, subject_for
from eventray.pipeline.ports import Uplink

__all__ = [
    "HEADER_ASSET",
    "HEADER_ORG",
    "HEADER_RECEIVED",
    "HEADER_REVISION",
    "HEADER_SOURCE",
    "LEGACY_HEADER_RECEIVED",
    "Accepted",
    "IngressPolicy",
    "Refused",
    "ingested_headers",
    "new_tracker_id",
]

# What an accepted ingestion carries to the lanes besides its id (Nats-Msg-Id).
HEADER_SOURCE = "Eventray-Data-Source"
HEADER_RECEIVED = "Eventray-Received-Ms"  # epoch milliseconds
HEADER_ORG = "Eventray-Org"
HEADER_ASSET = "Eventray-Asset"  # the bound asset: the lane need not parse the body again
# The config revision the ingress accepted it under: a lane that runs an older one catches up
# before it processes the event (else an event of a data source or device applied a moment ago
# would reach a lane that does not know it yet, and go to the DLQ).
HEADER_REVISION = "Eventray-Revision"
LEGACY_HEADER_RECEIVED = "Eventray-Received-At"  # ISO text, written by earlier versions


def ingested_headers(
    *, data_source_id: str, received_ms: int, org_id: str, asset_id: str = "", revision: int = 0
) -> dict[str, str]:
    """The headers of an accepted ingestion."""
    headers = {HEADER_SOURCE: data_source_id, HEADER_RECEIVED: str(received_ms), HEADER_ORG: org_id}
    if asset_id:
        headers[HEADER_ASSET] = asset_id
    if revision:
        headers[HEADER_REVISION] = str(revision)
    return headers


MAX_DEPTH = 254
"""Deepest nesting of an event (orjson's limit: every stage after the ingress re-encodes)."""


def _encode_error(exc: Exception) -> str:
    if "recursion" in str(exc).lower():
        return f"event nested deeper than {MAX_DEPTH} levels"
    return f"event cannot be encoded as JSON: {exc}"


class _TrackerIds:
    """eventTrackerIds: a random 64-bit prefix per process and a counter.

    Unique across processes (the prefix) and within one (the counter), and ~10x cheaper than
    ``uuid4()``, which asks the kernel for randomness every time.
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._next):016x}"


new_tracker_id = _TrackerIds()
"""A new eventTrackerId: 32 hex characters, unique across processes."""


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
    stage: str = "auth"
    """Where it was refused, as ``events_raw.stage`` records it (``auth``, ``bind``)."""
    retry_after_s: float | None = None
    """For a 503: when the client may try again."""


class IngressPolicy:
    """Decides each request against one catalog snapshot.

    Args:
        catalog: entities (replace the policy when the catalog changes).
        partitions: number of stream partitions.
        subject_prefix: stream subject prefix (``{prefix}.p{n}``).
        max_body_bytes: larger bodies get 413.
        keys: the key sets of ``oauth2`` data sources (kept by the ingress across catalogs;
            without it those data sources refuse every request).
        tokens: the API tokens of ``apiToken`` data sources (kept by the ingress across
            catalogs; without it those data sources refuse every request).
        leeway_s: clock skew allowed on the times of ``jwt`` and ``oauth2`` tokens.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        partitions: int,
        subject_prefix: str,
        max_body_bytes: int,
        keys: JwksCache | None = None,
        tokens: IngestTokens | None = None,
        leeway_s: float = 0.0,
    ) -> None:
        self.catalog = catalog
        self.partitions = partitions
        self.subject_prefix = subject_prefix
        self.max_body_bytes = max_body_bytes
        self.keys = keys
        self.tokens = tokens
        self.org_paths = catalog.org_paths if tokens is not None else {}
        self.leeway_s = leeway_s
        self.binder = AssetBinder(catalog)
        # Headers that carry credentials: one value each, or the request is ambiguous.
        names = {"authorization"}
        urls = set()
        for source in catalog.data_sources.values():
            auth = source.auth
            if isinstance(auth, ApiKeyAuth) and auth.in_ == "header":
                names.add(auth.name.lower())
            elif isinstance(auth, JwtAuth):
                names.add(auth.header.lower())
            elif isinstance(auth, OAuth2Auth):
                urls.add(auth.jwks_url)
        self.credential_headers = frozenset(names)
        self.jwks_urls = frozenset(urls)
        """The JWKS URLs of this catalog's data sources."""

    async def source(
        self,
        data_source_id: str | None,
        *,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        client_ip: str,
        body: bytes,
    ) -> DataSource | Refused:
        """The data source if the request may proceed, else the refusal (404/403/401/503)."""
        if not data_source_id:
            return Refused(404, "missing ?ds= (the data source id)")
        source = self.catalog.data_sources.get(data_source_id)
        if source is None:
            return Refused(404, f"unknown data source {data_source_id!r}")
        if not source.enabled:
            return Refused(
                403, f"data source {data_source_id!r} is disabled", source.id, source.org_id
            )
        result = await authenticate(
            source.auth,
            headers=headers,
            query=query,
            client_ip=client_ip,
            keys=self.keys,
            tokens=self.tokens,
            org_id=source.org_id,
            org_paths=self.org_paths,
            leeway_s=self.leeway_s,
        )
        if not result.ok and result.status == 503:
            return Refused(
                503, result.reason, source.id, source.org_id, retry_after_s=result.retry_after_s
            )
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
        self,
        source: DataSource,
        item: Any,
        *,
        raw: bytes | None = None,
        received_ms: int | None = None,
    ) -> Accepted | Refused:
        """One JSON value (already parsed) from an authenticated request.

        Args:
            source: the authenticated data source.
            item: the parsed event.
            raw: ``item``'s JSON text when the request body is exactly that (a single POST):
                it is published as received instead of being encoded again.
            received_ms: when it arrived (epoch milliseconds; default now).
        """
        if not isinstance(item, dict):
            return Refused(400, "body must be a JSON object", source.id, source.org_id)
        if raw is None or raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
            try:  # also proves a raw body that might be deeper than the stages can re-encode
                body = orjson.dumps(item)
            except orjson.JSONEncodeError as exc:
                return Refused(400, _encode_error(exc), source.id, source.org_id)
            if raw is not None:
                body = raw
        else:
            body = raw
        if len(body) > self.max_body_bytes:
            return Refused(
                413, f"event larger than {self.max_body_bytes} bytes", source.id, source.org_id
            )
        asset = self.binder.bind(source, item)
        if isinstance(asset, str) or not asset.enabled:
            # Answered now, with the reason, and kept (whole: the client is authenticated) so
            # it can be replayed once the asset exists; no 201 followed by a DLQ row.
            reason = asset if isinstance(asset, str) else f"asset {asset.id!r} is disabled"
            return Refused(422, reason, source.id, source.org_id, new_tracker_id(), body,
                           keep=True, stage="bind")  # fmt: skip
        org_id = asset.org_id
        when = received_ms if received_ms is not None else time.time_ns() // 1_000_000
        subject = subject_for(self.subject_prefix, partition_of(org_id, self.partitions))
        headers = ingested_headers(
            data_source_id=source.id,
            received_ms=when,
            org_id=org_id,
            asset_id=asset.id,
            revision=self.catalog.revision,
        )
        return Accepted(new_tracker_id(), subject, body, headers)

    def uplink(self, uplink: Uplink, *, received_ms: int | None = None) -> Accepted | Refused:
        """One MQTT publish: the broker let it through only on its device's own topic, so the
        topic names the asset (the body is not read to bind it; a payload that is not JSON
        goes on to the template's codec as bytes). What cannot go on is refused with the
        reason and kept whole (``keep``: the device is authenticated) for a replay: a data
        source or asset disabled or deleted since the device connected (its broker user goes
        within ``mqtt.sync_interval_s``), a payload over ``max_body_bytes``, JSON the stages
        cannot re-encode. eventTrackerIds of stored (QoS 1/2) uplinks come from the broker's
        store sequence, so a redelivery publishes the same id again."""
        tracker = (
            tracker_id_of(uplink.store_id, uplink.seq)
            if uplink.qos and uplink.seq
            else new_tracker_id()
        )
        source = self.catalog.data_sources.get(uplink.data_source_id)
        asset = self.binder.by_uuid.get(uplink.asset_uuid)
        org_id = asset.org_id if asset is not None else (source.org_id if source else "")

        def refuse(status: int, reason: str) -> Refused:
            return Refused(status, reason, uplink.data_source_id, org_id, tracker,
                           uplink.payload, keep=True, stage="bind")  # fmt: skip

        if source is None or source.protocol != "mqtt":
            return refuse(404, f"no mqtt data source {uplink.data_source_id!r}")
        if not source.enabled:
            return refuse(403, f"data source {source.id!r} is disabled")
        if asset is None:
            return refuse(422, f"no asset with assetUUID {uplink.asset_uuid!r}")
        fixed = source.asset_bind.fixed_asset_id
        if (fixed is not None and fixed != asset.id) or not self.catalog.is_ancestor_or_self(
            source.org_id, asset.org_id
        ):
            return refuse(422, f"asset {asset.id!r} is not data source {source.id!r}'s")
        if not asset.enabled:
            return refuse(422, f"asset {asset.id!r} is disabled")
        body = uplink.payload
        if len(body) > self.max_body_bytes:
            return refuse(413, f"payload of {len(body)} bytes, over {self.max_body_bytes}")
        if body[:1] in (b"{", b"[") and body.count(b"{") + body.count(b"[") > MAX_DEPTH:
            try:  # JSON the stages could not encode again fails here, not in a lane
                orjson.dumps(orjson.loads(body))
            except orjson.JSONDecodeError:
                pass  # not JSON after all: a codec's bytes
            except orjson.JSONEncodeError as exc:
                return refuse(400, _encode_error(exc))
        when = received_ms if received_ms is not None else time.time_ns() // 1_000_000
        subject = subject_for(self.subject_prefix, partition_of(asset.org_id, self.partitions))
        headers = ingested_headers(
            data_source_id=source.id, received_ms=when, org_id=asset.org_id,
            asset_id=asset.id, revision=self.catalog.revision,
        )  # fmt: skip
        return Accepted(tracker, subject, body, headers)
