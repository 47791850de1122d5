"""The management API's secrets: write-only (``/api/v1/manage/secrets``).

====================================  ==========================================================
``GET /secrets``                      the scope's secrets: organization, name, ``shared``, when
                                      and by whom last set (``orgId``, ``includeChildren``)
``GET /secrets/changes``              every change: who, when, organization, name, operation
``GET /secrets/{orgId}/{name}``       one secret, as listed
``PUT /secrets/{orgId}/{name}``       set or rotate ``{value, shared}``: 201 created, 200
                                      replaced (editors)
``DELETE /secrets/{orgId}/{name}``    delete (editors)
====================================  ==========================================================

No answer holds a value, sealed or not; 503 when the operator gave the stack no key. The rules
are :class:`eventray.pipeline.management.secrets.SecretService`'s; the service is
``request.app.state.secrets``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eventray.actors.api_auth import Editor, Viewer
from eventray.actors.api_schema import ErrorBody
from eventray.pipeline.management.secrets import (
    MAX_VALUE_BYTES,
    SecretService,
    SecretsNotConfigured,
    secret_view,
)

__all__ = ["SecretBody", "secrets_router"]

_PREFIX = "/api/v1/manage/secrets"
_TAGS: list[Any] = ["secrets"]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretBody(_Wire):
    """A secret's new value: never returned, never logged, stored sealed."""

    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES,
                       description=f"the value (at most {MAX_VALUE_BYTES} bytes)")  # fmt: skip
    shared: bool = Field(default=False, description="descendant organizations may render it")


class _Author(_Wire):
    name: str
    id: str


class SecretOut(_Wire):
    org_id: str
    name: str
    shared: bool
    updated: str
    updated_by: _Author
    orphaned: bool | None = Field(
        default=None, description="its organization was deleted (the local admin sees these)"
    )


class SecretWriteOut(SecretOut):
    created: bool


class SecretPage(_Wire):
    items: list[SecretOut]


class SecretChangeOut(_Wire):
    org_id: str
    name: str
    op: str = Field(description="set, delete, or rekey (re-sealed with a new key)")
    at: str
    author: _Author
    shared: bool | None
    created: bool


class SecretChangePage(_Wire):
    items: list[SecretChangeOut]


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {401: "no valid API token", 403: "the role may not",
               404: "unknown or outside the token's scope", 413: "body too large",
               422: "refused: each problem with its field path and reason",
               503: "the stack has no secrets key"}  # fmt: skip
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}


OrgId = Annotated[str, Path(alias="orgId", min_length=1)]
Name = Annotated[str, Path(min_length=1)]
OrgFilter = Annotated[str | None, Query(alias="orgId", description="this organization's")]
Children = Annotated[bool, Query(alias="includeChildren", description="with orgId: its subtree")]


def _unconfigured(exc: SecretsNotConfigured) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503)


def secrets_router() -> APIRouter:
    """The routes (see the module's docstring)."""
    router = APIRouter(prefix=_PREFIX, tags=_TAGS)

    @router.get("", operation_id="list_secrets", response_model=SecretPage,
                response_model_exclude_none=True, summary="Secrets of the scope (never values)",
                responses=_responses(401, 403, 422))  # fmt: skip
    def list_secrets(request: Request, scope: Viewer, org_id: OrgFilter = None,
                     include_children: Children = False) -> dict[str, Any]:  # fmt: skip
        service: SecretService = request.app.state.secrets
        return {
            "items": service.list_secrets(scope, org_id=org_id, include_children=include_children)
        }

    @router.get("/changes", operation_id="secret_changes", response_model=SecretChangePage,
                summary="Every change of the scope's secrets: who, when, what (never values)",
                responses=_responses(401, 403, 422))  # fmt: skip
    def changes(request: Request, scope: Viewer, org_id: OrgFilter = None,
                include_children: Children = False) -> dict[str, Any]:  # fmt: skip
        service: SecretService = request.app.state.secrets
        return {"items": service.changes(scope, org_id=org_id, include_children=include_children)}

    @router.get("/{orgId}/{name}", operation_id="get_secret", response_model=SecretOut,
                response_model_exclude_none=True, summary="One secret, as listed (never its value)",
                responses=_responses(401, 403, 404, 422))  # fmt: skip
    def get_secret(request: Request, scope: Viewer, org_id: OrgId, name: Name) -> dict[str, Any]:
        service: SecretService = request.app.state.secrets
        return service.get(scope, org_id, name)

    @router.put("/{orgId}/{name}", operation_id="set_secret", response_model=SecretWriteOut,
                response_model_exclude_none=True, status_code=200,
                summary="Set or rotate a secret (201 created, 200 replaced); applies without "
                "restart", responses={201: {"model": SecretWriteOut, "description": "created"},
                                      **_responses(401, 403, 404, 413, 422, 503)})  # fmt: skip
    def set_secret(request: Request, scope: Editor, org_id: OrgId, name: Name,
                   body: SecretBody) -> Any:  # fmt: skip
        service: SecretService = request.app.state.secrets
        try:
            written = service.put(scope, org_id, name, body.value, shared=body.shared)
        except SecretsNotConfigured as exc:
            return _unconfigured(exc)
        view = {**secret_view(written.record), "created": written.created}
        return JSONResponse(view, status_code=201 if written.created else 200)

    @router.delete("/{orgId}/{name}", operation_id="delete_secret", response_model=SecretOut,
                   response_model_exclude_none=True, summary="Delete a secret",
                   responses=_responses(401, 403, 404, 422))  # fmt: skip
    def delete_secret(request: Request, scope: Editor, org_id: OrgId, name: Name) -> dict[str, Any]:
        service: SecretService = request.app.state.secrets
        return service.delete(scope, org_id, name)

    return router
