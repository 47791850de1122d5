"""The management API's wire shapes (pydantic models) and the parts of its OpenAPI document
FastAPI cannot derive from the routes: the entity schemas, and the ingestion endpoints, which
the ingress serves on its own port.

Entity bodies are read as raw JSON and validated by the loader (the same field paths and
reasons as ``eventray validate``), so their schemas are put into the document here, from the
entity models themselves in validation mode: what a client may send is exactly what the
platform accepts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import models_json_schema

from eventray.pipeline.models import ENTITY_KINDS

__all__ = [
    "ApplyBody",
    "DryRunBody",
    "DryRunResult",
    "ErrorBody",
    "HistoryPage",
    "Issue",
    "IssuedTokenOut",
    "Referrer",
    "RollbackBody",
    "TokenCreate",
    "TokenOut",
    "TokenPage",
    "Whoami",
    "WriteResult",
    "component_schemas",
    "ingestion_paths",
    "page_schema",
]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Issue(_Wire):
    """One problem: where (the document, the field path) and why."""

    source: str = Field(description="'request' (what you sent) or 'stored'")
    path: str = Field(description="field path, e.g. routers[0].match.rules[1].operator")
    reason: str
    kind: str = ""
    id: str = ""


class Referrer(_Wire):
    kind: str
    id: str
    path: str = Field(description="the referrer's field that names the entity")


class ErrorBody(_Wire):
    """Every refusal: the error, and for 422 the problems, for 409 on delete the referrers."""

    error: str
    issues: list[Issue] | None = None
    referrers: list[Referrer] | None = None
    hidden_referrers: int | None = Field(
        default=None, description="referrers outside the token's scope (counted, not named)"
    )
    revision: int | None = Field(default=None, description="412: the entity's revision now")


class Change(_Wire):
    kind: str
    id: str
    op: Literal["create", "update", "delete", "unchanged"]
    revision: int = Field(description="the entity's revision after the write")


class WriteResult(_Wire):
    store_revision: int = Field(description="the configuration revision actors reload to")
    changes: list[Change]
    dry_run: bool = False
    entity: dict[str, Any] | None = Field(
        default=None, description="the entity as stored (secrets redacted)"
    )


class ApplyBody(_Wire):
    documents: list[dict[str, Any]] = Field(
        description="entities of any kind (each with 'kind'), created or replaced in one change"
    )


class DeleteRef(_Wire):
    kind: str
    id: str


class DryRunBody(_Wire):
    documents: list[dict[str, Any]] = Field(default_factory=list)
    deletes: list[DeleteRef] = Field(default_factory=list)


class DryRunResult(_Wire):
    valid: bool
    issues: list[Issue]


class RollbackBody(_Wire):
    revision: int = Field(ge=1, description="the entity's state right after this revision")


class Author(_Wire):
    name: str
    id: str


class HistoryEntry(_Wire):
    revision: int
    store_revision: int
    at: str
    author: Author
    op: Literal["create", "update", "delete"]
    note: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    diff: list[dict[str, Any]] = Field(description="[{op: add|remove|replace, path, from?, to?}]")


class HistoryPage(_Wire):
    items: list[HistoryEntry]


class TokenCreate(_Wire):
    org_id: str = Field(min_length=1)
    role: Literal["admin", "editor", "viewer", "ingest"]
    name: str = ""
    expires_days: float | None = Field(default=None, gt=0, le=36500)


class TokenOut(_Wire):
    id: str
    name: str
    org_id: str
    role: str
    created: str
    expires: str | None
    revoked: str | None
    created_by: str
    active: bool


class IssuedTokenOut(TokenOut):
    token: str = Field(description="the secret: shown this once, never stored")


class TokenPage(_Wire):
    items: list[TokenOut]


class Whoami(_Wire):
    token_id: str
    name: str
    org_id: str | None
    role: str
    path_key: str | None = Field(description="the scope: this pathKey and below")


class EventAccepted(_Wire):
    event_tracker_id: str


class BatchItem(_Wire):
    status: int
    event_tracker_id: str | None = None
    error: str | None = None


class BatchResults(_Wire):
    results: list[BatchItem]


class IngressError(_Wire):
    error: str


def component_schemas() -> dict[str, Any]:
    """The schemas of every entity kind (validation mode: what may be sent) and of the
    ingestion bodies, keyed by model name, with references between them."""
    models: list[type[BaseModel]] = [*ENTITY_KINDS.values(), EventAccepted, BatchResults,
                                     IngressError]  # fmt: skip
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def page_schema(kind: str) -> dict[str, Any]:
    """A list page of ``kind``."""
    return {
        "type": "object",
        "title": f"{kind}Page",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{kind}"}},
            "nextCursor": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": "pass as ?cursor= for the next page; null on the last",
            },
        },
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}  # fmt: skip


def ingestion_paths(ingress_url: str) -> dict[str, Any]:
    """``POST /api/v1/events`` and ``/api/v1/events/batch`` (CONTRACTS.md "HTTP ingestion"),
    with the ingress as their server: they are served on the ingress's port, not the API's."""
    servers = [{"url": ingress_url, "description": "the ingress (its own port, not the API's)"}]
    ds = {"name": "ds", "in": "query", "required": True, "schema": {"type": "string"},
          "description": "the data source's id; its auth (API key, JWT, OAuth2, IP allowlist) "
                         "applies, not an API token"}  # fmt: skip
    refusals = {
        "400": "not a JSON object, or an ambiguous request",
        "401": "the data source's authentication failed",
        "403": "data source disabled",
        "404": "unknown data source",
        "413": "body too large",
        "415": "not JSON",
        "429": "over quota or queue (Retry-After)",
        "503": "the stream did not answer (Retry-After)",
    }
    errors = {code: _json("IngressError", why) for code, why in refusals.items()}
    note = " Served by the ingress on its own port (see servers)."
    return {
        "/api/v1/events": {
            "servers": servers,
            "post": {
                "tags": ["ingestion (ingress port)"],
                "operationId": "ingest_event",
                "summary": "Ingest one event",
                "description": "Answered once the event is durably in the stream." + note,
                "parameters": [ds],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "201": _json("EventAccepted", "stored in the stream"),
                    "422": _json("IngressError", "no asset takes the event (kept in events_raw)"),
                    **errors,
                },
            },
        },
        "/api/v1/events/batch": {
            "servers": servers,
            "post": {
                "tags": ["ingestion (ingress port)"],
                "operationId": "ingest_batch",
                "summary": "Ingest a batch of events, answered per item",
                "description": "A JSON array of event objects; each item gets its own status."
                + note,
                "parameters": [ds],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": {"type": "object"}}
                        }
                    },
                },
                "responses": {
                    "207": _json("BatchResults", "per item: 201, 400, 413, 422 or 503"),
                    **errors,
                },
            },
        },
    }
