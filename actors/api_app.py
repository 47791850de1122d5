"""The management API over HTTP (FastAPI on uvicorn), without Ray.

:class:`ApiActor` (``eventray.actors.api``) hosts it in the cluster; tests run it directly on
a free port. The decisions are the services' (:mod:`eventray.pipeline.management`): this module
maps routes onto them and their refusals onto statuses:

====  =====================================================================================
401   no token, or one unknown, expired or revoked, or whose organization is gone
403   the token's role may not do this (an ``ingest`` token: anything)
404   unknown, or outside the token's scope (the same answer, so ids do not leak)
409   the id is taken; a delete of something still used (naming the referrers)
412   ``If-Match`` names another revision than the entity's
413   body over ``api.max_body_bytes``
422   the change is refused: each problem with its field path and reason (the same as
      ``eventray validate``), or a query parameter or body that does not validate
====  =====================================================================================

Routes live under ``/api/v1/manage``; ``/console/`` serves the web console
(:mod:`eventray.actors.api_console`); ``/docs`` serves the interactive documentation and
``/openapi.json`` the document (the ingestion endpoints included, with the ingress as their
server). Entity bodies are read as JSON and validated by the services, so a malformed one is a
422 with field paths, never a 500; anything that still raises is a bug, answered 500 and
logged as one line at most every 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Annotated, Any

import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse as _StarletteJSON
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventray.actors.api_auth import Admin, Editor, Viewer
from eventray.actors.api_console import mount_console
from eventray.actors.api_sandbox import sandbox_router
from eventray.actors.api_schema import (
    ApplyBody,
    DryRunBody,
    DryRunResult,
    ErrorBody,
    HistoryPage,
    IssuedTokenOut,
    RollbackBody,
    TokenCreate,
    TokenOut,
    TokenPage,
    Whoami,
    WriteResult,
    component_schemas,
    ingestion_paths,
    page_schema,
)
from eventray.config.settings import ApiSettings
from eventray.pipeline.errors import ConfigError, RetryableError, RevisionConflictError
from eventray.pipeline.management import (
    SLUGS,
    EntityService,
    Forbidden,
    Invalid,
    NotFound,
    Referenced,
    Taken,
    TokenService,
    Unauthorized,
    Written,
)
from eventray.pipeline.management.tokens import token_view

__all__ = ["PREFIX", "ApiApp", "build_app"]

PREFIX = "/api/v1/manage"
_LOG_EVERY_S = 10.0
_log = logging.getLogger(__name__)


class JSONResponse(_StarletteJSON):
    """JSON by orjson: a page of 1,000 assets encodes ~5x faster than with the standard
    library, which decided the big pages' p99 in ``bench_api``."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    headers = {"WWW-Authenticate": 'Bearer realm="eventray"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _issues(error: ConfigError) -> list[dict[str, str]]:
    return [
        {"source": i.source, "path": i.path, "reason": i.reason, "kind": i.kind,
         "id": i.entity_id}
        for i in error.issues
    ]  # fmt: skip


def _pydantic_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {400: "not JSON", 401: "no valid API token", 403: "the role may not",
               404: "unknown or outside the token's scope", 409: "taken, or still referenced",
               412: "If-Match does not hold", 413: "body too large",
               422: "refused: each problem with its field path and reason"}  # fmt: skip
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}


def _json_of(ref_or_schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref_or_schema}"} if isinstance(
        ref_or_schema, str) else ref_or_schema  # fmt: skip
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _entity_body(kind: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{kind}"}}}}}  # fmt: skip


def _expected(if_match: str | None) -> int | None:
    """The revision an ``If-Match`` header names (``"3"``, ``W/"3"``, ``3``); ``*`` or none:
    no condition.

    Raises:
        Invalid: something else.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise Invalid(f"If-Match must be an entity revision such as \"3\", not {if_match!r}",
                      "If-Match")  # fmt: skip
    return int(text)


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadJson(f"the body is not JSON: {exc}") from exc


class _BadJson(Exception):
    pass


def _written(result: Written) -> dict[str, Any]:
    return {"storeRevision": result.store_revision, "changes": result.changes,
            "dryRun": result.dry_run, "entity": result.document}  # fmt: skip


class _BodyLimit:
    """413 for a request body over ``limit`` bytes, before the route reads it whole (by its
    Content-Length, or while it streams in without one)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"error": f"body too large (limit {self.limit} bytes)"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def build_app(
    entities: EntityService,
    tokens: TokenService,
    *,
    ingress_url: str = "http://127.0.0.1:8088",
    routers: Sequence[APIRouter] = (),
    max_body_bytes: int = 16 * 1024 * 1024,
    state: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI application: the entity and token routes, ``routers`` (other parts of the
    API, already using :mod:`eventray.actors.api_auth`), the error mapping and the OpenAPI
    document. ``state`` puts what those routers need on ``app.state`` (a route reads it as
    ``request.app.state.<name>``), beside ``entities`` and ``tokens``."""
    app = FastAPI(
        default_response_class=JSONResponse,
        title="eventray management API",
        version="1",
        description=(
            "Entities of every kind with tenant-scoped RBAC and revision history, and API "
            "tokens. Send `Authorization: Bearer <token>`; a token sees and changes only its "
            "organization's subtree (pathKey prefix); anything else answers 404. The "
            "ingestion endpoints (`/api/v1/events`, `/api/v1/events/batch`) are served by the "
            "ingress on its own port, with the data source's authentication, not a token."
        ),
    )
    for name, value in (state or {}).items():
        setattr(app.state, name, value)
    app.state.entities = entities
    app.state.tokens = tokens
    errors: dict[str, float] = {"logged_at": 0.0, "unlogged": 0}

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, str(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(Taken)
    async def taken(_: Request, exc: Taken) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(Referenced)
    async def referenced(_: Request, exc: Referenced) -> JSONResponse:
        return _error(409, str(exc), referrers=[{"kind": k, "id": i, "path": p}
                                                for k, i, p in exc.referrers],
                      hiddenReferrers=exc.hidden or None)  # fmt: skip

    @app.exception_handler(RevisionConflictError)
    async def conflict(_: Request, exc: RevisionConflictError) -> JSONResponse:
        return _error(412, str(exc), revision=exc.actual)

    @app.exception_handler(ConfigError)
    async def invalid_config(_: Request, exc: ConfigError) -> JSONResponse:
        return _error(422, f"{len(exc.issues)} problem(s)", issues=_issues(exc))

    @app.exception_handler(Invalid)
    async def invalid(_: Request, exc: Invalid) -> JSONResponse:
        issue = {"source": "request", "path": exc.path, "reason": str(exc), "kind": "", "id": ""}
        return _error(422, str(exc), issues=[issue])

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        issues = []
        for error in exc.errors():
            loc = list(error.get("loc", ()))
            where = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else ""
            path = _pydantic_path(loc[1:] if where else loc)
            reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            issues.append({"source": "request", "path": f"{where}:{path}" if where != "body"
                           and where else path, "reason": reason, "kind": "", "id": ""})  # fmt: skip
        return _error(422, f"{len(issues)} problem(s)", issues=issues)

    @app.exception_handler(_BadJson)
    async def bad_json(_: Request, exc: _BadJson) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RetryableError)
    async def unavailable(_: Request, exc: RetryableError) -> JSONResponse:
        response = _error(503, f"a store is unavailable: {exc}")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        now = time.monotonic()
        if now - errors["logged_at"] >= _LOG_EVERY_S:
            _log.error("management API: internal error on %s: %s: %s (%d more since the last "
                       "report)", request.url.path, type(exc).__name__, exc,
                       int(errors["unlogged"]))  # fmt: skip
            errors["logged_at"], errors["unlogged"] = now, 0
        else:
            errors["unlogged"] += 1
        return _error(500, "internal error")

    router = APIRouter(prefix=PREFIX)
    _entity_routes(router)
    _other_routes(router)
    app.include_router(router)
    # The test runs (templates, business rules) belong to the entities' API: always served.
    app.include_router(sandbox_router())
    for extra in routers:
        app.include_router(extra)
    mount_console(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in component_schemas().items():
                components.setdefault(name, definition)
            schema["paths"].update(ingestion_paths(ingress_url))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    return app


Cursor = Annotated[str | None, Query(description="from the previous page's nextCursor")]
Limit = Annotated[int, Query(ge=1, le=1000)]
IfMatch = Annotated[str | None, Header(description='the entity revision read (ETag), e.g. "3"')]
DryRun = Annotated[bool, Query(alias="dryRun", description="check only; write nothing")]
EntityId = Annotated[str, Path(min_length=1)]


def _entity_routes(router: APIRouter) -> None:
    for kind, slug in SLUGS.items():
        _one_kind(router, kind, slug)


def _one_kind(router: APIRouter, kind: str, slug: str) -> None:
    """The routes of one kind (a function per kind, so each closure keeps its own)."""
    name = slug.replace("-", "_")
    tags: list[str | Enum] = [slug]

    @router.get(f"/{slug}", operation_id=f"list_{name}", tags=tags, summary=f"List {slug}",
                responses={200: _json_of(page_schema(kind), f"a page of {slug} in id order"),
                           **_responses(401, 403, 422)})  # fmt: skip
    async def page(
        request: Request, scope: Viewer,
        org_id: Annotated[str | None, Query(alias="orgId", description="owned by this "
                                            "organization")] = None,
        include_children: Annotated[bool, Query(alias="includeChildren", description="with "
                                                "orgId: its subtree too")] = False,
        name: Annotated[str | None, Query(description="name contains (any case)")] = None,
        enabled: bool | None = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> JSONResponse:  # fmt: skip
        service: EntityService = request.app.state.entities
        found = await run_in_threadpool(
            service.page, scope.principal, kind, org_id=org_id, include_children=include_children,
            name=name, enabled=enabled, limit=limit, cursor=cursor,
        )  # fmt: skip
        return JSONResponse({"items": found.items, "nextCursor": found.next_cursor})

    @router.post(f"/{slug}", operation_id=f"create_{name}", tags=tags, status_code=201,
                 summary=f"Create one of {slug}", openapi_extra=_entity_body(kind),
                 responses={201: _json_of("WriteResult", "created"),
                            **_responses(400, 401, 403, 409, 413, 422)})  # fmt: skip
    async def create(request: Request, scope: Editor, dry_run: DryRun = False) -> JSONResponse:
        service: EntityService = request.app.state.entities
        body = await _body(request)
        if not isinstance(body, dict):
            raise Invalid(f"a {kind} must be a JSON object")
        result = await run_in_threadpool(lambda: service.create(scope.principal, kind, body,
                                                                dry_run=dry_run))  # fmt: skip
        return JSONResponse(_written(result), status_code=200 if dry_run else 201)

    @router.get(f"/{slug}/{{entity_id}}", operation_id=f"get_{name}", tags=tags,
                summary=f"One of {slug} (ETag: its revision)",
                responses={200: _json_of(kind, "the entity, secrets shown as <redacted>"),
                           **_responses(401, 403, 404, 422)})  # fmt: skip
    async def get(request: Request, scope: Viewer, entity_id: EntityId) -> JSONResponse:
        service: EntityService = request.app.state.entities
        doc, revision = await run_in_threadpool(service.get, scope.principal, kind, entity_id)
        return JSONResponse(doc, headers={"ETag": f'"{revision}"'})

    @router.put(f"/{slug}/{{entity_id}}", operation_id=f"update_{name}", tags=tags,
                summary=f"Replace one of {slug} (the whole document)",
                openapi_extra=_entity_body(kind),
                responses={200: _json_of("WriteResult", "replaced"),
                           **_responses(400, 401, 403, 404, 412, 413, 422)})  # fmt: skip
    async def update(request: Request, scope: Editor, entity_id: EntityId,
                     if_match: IfMatch = None, dry_run: DryRun = False) -> JSONResponse:  # fmt: skip
        service: EntityService = request.app.state.entities
        expected = _expected(if_match)
        body = await _body(request)
        if not isinstance(body, dict):
            raise Invalid(f"a {kind} must be a JSON object")
        result = await run_in_threadpool(lambda: service.update(
            scope.principal, kind, entity_id, body, expected=expected, dry_run=dry_run))  # fmt: skip
        return JSONResponse(_written(result))

    @router.delete(f"/{slug}/{{entity_id}}", operation_id=f"delete_{name}", tags=tags,
                   summary=f"Delete one of {slug} (409 while others use it)",
                   responses={200: _json_of("WriteResult", "deleted"),
                              **_responses(401, 403, 404, 409, 412, 422)})  # fmt: skip
    async def delete(request: Request, scope: Editor, entity_id: EntityId,
                     if_match: IfMatch = None, dry_run: DryRun = False) -> JSONResponse:  # fmt: skip
        service: EntityService = request.app.state.entities
        expected = _expected(if_match)
        result = await run_in_threadpool(lambda: service.delete(
            scope.principal, kind, entity_id, expected=expected, dry_run=dry_run))  # fmt: skip
        return JSONResponse(_written(result))

    @router.get(f"/{slug}/{{entity_id}}/history", operation_id=f"history_{name}", tags=tags,
                summary="Every change: who, when, before, after, diff", response_model=HistoryPage,
                responses=_responses(401, 403, 404, 422))  # fmt: skip
    async def history(request: Request, scope: Viewer, entity_id: EntityId) -> JSONResponse:
        service: EntityService = request.app.state.entities
        items = await run_in_threadpool(service.history, scope.principal, kind, entity_id)
        return JSONResponse({"items": items})

    @router.post(f"/{slug}/{{entity_id}}/rollback", operation_id=f"rollback_{name}", tags=tags,
                 summary="Back to the state right after a revision (a new change)",
                 response_model=WriteResult,
                 responses=_responses(401, 403, 404, 409, 412, 422))  # fmt: skip
    async def rollback(request: Request, scope: Editor, entity_id: EntityId,
                       body: RollbackBody, dry_run: DryRun = False) -> JSONResponse:  # fmt: skip
        service: EntityService = request.app.state.entities
        result = await run_in_threadpool(lambda: service.rollback(
            scope.principal, kind, entity_id, body.revision, dry_run=dry_run))  # fmt: skip
        return JSONResponse(_written(result))


def _other_routes(router: APIRouter) -> None:
    @router.get("/whoami", operation_id="whoami", tags=["tokens"], response_model=Whoami,
                responses=_responses(401, 403))  # fmt: skip
    def whoami(scope: Viewer) -> Whoami:
        p = scope.principal
        return Whoami(token_id=p.token_id, name=p.name, org_id=p.org_id, role=p.role,
                      path_key=scope.path_key)  # fmt: skip

    @router.post("/apply", operation_id="apply", tags=["entities"], response_model=WriteResult,
                 summary="Create or replace many entities in one change (eventray apply)",
                 responses=_responses(401, 403, 409, 413, 422))  # fmt: skip
    async def apply(request: Request, scope: Editor, body: ApplyBody,
                    dry_run: DryRun = False) -> JSONResponse:  # fmt: skip
        service: EntityService = request.app.state.entities
        result = await run_in_threadpool(lambda: service.apply(scope.principal, body.documents,
                                                               dry_run=dry_run))  # fmt: skip
        return JSONResponse(_written(result))

    @router.post("/dry-run", operation_id="dry_run", tags=["entities"],
                 response_model=DryRunResult,
                 summary="The problems writes would meet, as `eventray validate` reports them",
                 responses=_responses(401, 403, 404, 413, 422))  # fmt: skip
    async def dry_run(request: Request, scope: Editor, body: DryRunBody) -> JSONResponse:
        service: EntityService = request.app.state.entities
        deletes = [(d.kind, d.id) for d in body.deletes]
        issues = await run_in_threadpool(service.dry_run, scope.principal, body.documents, deletes)
        shown = _issues(ConfigError(issues))
        return JSONResponse({"valid": not issues, "issues": shown})

    @router.get("/tokens", operation_id="list_tokens", tags=["tokens"], response_model=TokenPage,
                summary="Tokens of the scope (admins)",
                responses=_responses(401, 403))  # fmt: skip
    def list_tokens(request: Request, scope: Admin) -> dict[str, Any]:
        tokens: TokenService = request.app.state.tokens
        now = tokens.clock.now()
        return {"items": [token_view(r, now) for r in tokens.list_tokens(scope)]}

    @router.post("/tokens", operation_id="create_token", tags=["tokens"], status_code=201,
                 response_model=IssuedTokenOut, summary="Make a token (its secret shown once)",
                 responses=_responses(401, 403, 404, 413, 422))  # fmt: skip
    def create_token(request: Request, scope: Admin, body: TokenCreate) -> dict[str, Any]:
        tokens: TokenService = request.app.state.tokens
        issued = tokens.create(scope, org_id=body.org_id, role=body.role, name=body.name,
                               expires_days=body.expires_days)  # fmt: skip
        return {**token_view(issued.record, tokens.clock.now()), "token": issued.token}

    @router.get("/tokens/{token_id}", operation_id="get_token", tags=["tokens"],
                response_model=TokenOut, responses=_responses(401, 403, 404, 422))  # fmt: skip
    def get_token(request: Request, scope: Admin, token_id: EntityId) -> dict[str, Any]:
        tokens: TokenService = request.app.state.tokens
        return token_view(tokens.get(scope, token_id), tokens.clock.now())

    @router.delete("/tokens/{token_id}", operation_id="revoke_token", tags=["tokens"],
                   response_model=TokenOut, summary="Revoke a token (it fails from now on)",
                   responses=_responses(401, 403, 404, 422))  # fmt: skip
    def revoke_token(request: Request, scope: Admin, token_id: EntityId) -> dict[str, Any]:
        tokens: TokenService = request.app.state.tokens
        return token_view(tokens.revoke(scope, token_id), tokens.clock.now())


class ApiApp:
    """The management API's HTTP server on ``settings.host``/``settings.port`` (0: a free
    port), in the running event loop.

    Args:
        entities: the entity service.
        tokens: the token service.
        settings: where to listen, the body limit.
        ingress_url: where the ingestion endpoints are served (for the OpenAPI document).
        routers: more routes (see :mod:`eventray.actors.api_auth`).
        state: what they find on ``request.app.state``.
    """

    def __init__(
        self,
        *,
        entities: EntityService,
        tokens: TokenService,
        settings: ApiSettings,
        ingress_url: str = "http://127.0.0.1:8088",
        routers: Sequence[APIRouter] = (),
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.app = build_app(entities, tokens, ingress_url=ingress_url, routers=routers,
                             max_body_bytes=settings.max_body_bytes, state=state)  # fmt: skip
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Listen; returns the port."""
        # IPPROTO_TCP given, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP (the
        # accepted ones inherit it), and without it every keep-alive response waited ~40 ms
        # (the body's segment held by Nagle until the client's delayed ACK of the headers').
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)  # fmt: skip
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task  # raises why it did not start
                raise RuntimeError("the management API stopped while starting")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        self._server, self._task = None, None
