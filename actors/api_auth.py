"""How a route of the management API learns who calls it: FastAPI dependencies that check the
API token, the role and the organization, and hand the route a :class:`Scope`.

Every router of the API (entities, tokens, and those over stored data, DLQ redrive and replay)
uses these, so no route can forget one::

    from fastapi import APIRouter, Depends
    from eventray.actors.api_auth import Viewer  # or Editor, Admin

    router = APIRouter()

    @router.get("/events")
    def events(scope: Viewer) -> ...:
        # 401 (no/unknown/expired/revoked token), 403 (role) and a gone organization were
        # answered before this runs; filter by scope.path_key (None: everything), or ask
        # scope.covers_org(org_id) / scope.covers_path(path_key). Something outside the
        # scope must answer 404, as something unknown.

The dependencies find the services on ``request.app.state`` (``entities``, ``tokens``), put
there by :func:`eventray.actors.api_app.build_app`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventray.pipeline.management import EntityService, Role, Scope, TokenService

__all__ = ["Admin", "Editor", "Viewer", "requires", "scope_of"]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="An API token (ert_...): `eventray tokens create`, or POST /api/v1/manage/tokens",
)


def scope_of(request: Request, token: str | None, role: Role) -> Scope:
    """Authenticate ``token``, check ``role``, resolve the scope (blocking: file or database
    reads; FastAPI runs synchronous dependencies in its thread pool).

    Raises:
        Unauthorized: no token, or one that is unknown, expired, revoked, or whose
            organization is gone (401).
        Forbidden: the role is not enough (403).
    """
    tokens: TokenService = request.app.state.tokens
    entities: EntityService = request.app.state.entities
    principal = tokens.authenticate(token)
    principal.require(role)
    return entities.scope(principal)


def requires(role: Role) -> object:
    """A dependency giving the caller's :class:`Scope`, for tokens of ``role`` or above."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Scope:
        return scope_of(request, credentials.credentials if credentials else None, role)

    return Depends(dependency)


Viewer = Annotated[Scope, requires("viewer")]
"""A route parameter: the caller is at least a viewer; its scope."""
Editor = Annotated[Scope, requires("editor")]
"""A route parameter: the caller is at least an editor; its scope."""
Admin = Annotated[Scope, requires("admin")]
"""A route parameter: the caller is an admin; its scope."""
