"""Routes over stored data: events (EVA filters by field name), the log tables and the DLQ rows,
one event's story, each streamed as JSON, JSON lines or CSV.

They plan with :mod:`eventray.pipeline.storage.reading` (the CLI's planners) under the caller's
scope, so the SQL ANDs the token's subtree to every filter, and run the queries where the store
is (:class:`StoredData`: the store actor in the stack, a store in this process in tests).
Any role but ``ingest`` reads. An ``orgId`` that is unknown or outside the scope answers 404
with the message an unknown organization gets; a tracker id, asset or trigger of another tenant
simply finds nothing (an empty page, a 404 story).

Routes (under ``/api/v1/manage``):

- ``GET /events``: filters ``orgId`` (``includeChildren``), ``assetId``, ``eventType``,
  ``eventTrackerId``, ``since``/``until`` (ISO-8601), ``where`` (repeatable ``FIELD OP VALUE``,
  an EVA field by name, e.g. ``temperature > -15``), ``limit``, ``cursor``, ``format``
  (``json``: ``{"rows", "nextCursor"}``; ``jsonl``; ``csv``), ``all`` (every page to the end,
  streamed page by page).
- ``GET /events/{eventTrackerId}/story``: every stored row about one event, in order.
- ``GET /logs/{kind}``: ``rules``, ``captures``, ``triggers``, ``raw``, ``dlq``, ``scripts``,
  ``routers``, with the filters that table has (a filter it lacks: 422 naming those it has).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol

import anyio.from_thread
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from eventray.actors.api_app import PREFIX, _responses
from eventray.actors.api_auth import Viewer
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import InvalidQuery, RetryableError, UnknownOrganization
from eventray.pipeline.management import EntityService, Invalid, NotFound
from eventray.pipeline.management import Scope as CallerScope
from eventray.pipeline.ports import EventStore
from eventray.pipeline.storage.activity import Activity, ActivityQuery, query_activity
from eventray.pipeline.storage.export import ExportFormat, Page, export
from eventray.pipeline.storage.logs import LOG_KINDS, LogPage, LogQuery, log_columns, query_logs
from eventray.pipeline.storage.query import EventPage, EventQuery, query_events
from eventray.pipeline.storage.reading import plan_event_query, plan_log_query
from eventray.pipeline.storage.schema import columns_of
from eventray.pipeline.storage.scope import Scope
from eventray.pipeline.storage.story import EventStory, event_story

__all__ = [
    "CatalogCache",
    "DirectStoredData",
    "StoreActorData",
    "StoredData",
    "reads_router",
    "reads_state",
    "storage_scope",
]

_MEDIA = {"json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"}


class StoredData(Protocol):
    """Where the queries run (the store actor's methods of the same names)."""

    async def query_events(self, query: EventQuery) -> EventPage: ...

    async def query_logs(self, query: LogQuery) -> LogPage: ...

    async def event_story(self, scope: Scope, event_tracker_id: str) -> EventStory | None: ...

    async def activity(self, query: ActivityQuery) -> Activity: ...


class StoreActorData:
    """The stack's store actor, found by name in this process's Ray namespace."""

    def __init__(self, name: str = "store") -> None:
        self.name = name
        self._handle: Any = None

    async def _call(self, method: str, *args: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        try:
            if self._handle is None:
                self._handle = ray.get_actor(self.name)
            return await getattr(self._handle, method).remote(*args)
        except RayTaskError as exc:  # raised by the query (a bad cursor): the cause is the answer
            cause = exc.cause
            if isinstance(cause, Exception) and not isinstance(cause, RayError):
                raise cause from None
            raise RetryableError(f"the store failed: {exc}") from None
        except (RayActorError, RayError, ValueError) as exc:  # ValueError: no actor of that name
            self._handle = None
            raise RetryableError(f"the store is unavailable: {type(exc).__name__}") from None

    async def query_events(self, query: EventQuery) -> EventPage:
        page: EventPage = await self._call("query_events", query)
        return page

    async def query_logs(self, query: LogQuery) -> LogPage:
        page: LogPage = await self._call("query_logs", query)
        return page

    async def event_story(self, scope: Scope, event_tracker_id: str) -> EventStory | None:
        story: EventStory | None = await self._call("event_story", scope, event_tracker_id)
        return story

    async def activity(self, query: ActivityQuery) -> Activity:
        counted: Activity = await self._call("activity", query)
        return counted


class DirectStoredData:
    """An event store in this process (one query at a time, in a worker thread): for tests and
    tools that own the store."""

    def __init__(self, store: EventStore, *, database: str) -> None:
        self.store, self.database = store, database
        self._lock = threading.Lock()

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(self.store, *args, database=self.database)

    async def query_events(self, query: EventQuery) -> EventPage:
        page: EventPage = await run_in_threadpool(self._run, query_events, query)
        return page

    async def query_logs(self, query: LogQuery) -> LogPage:
        page: LogPage = await run_in_threadpool(self._run, query_logs, query)
        return page

    async def event_story(self, scope: Scope, event_tracker_id: str) -> EventStory | None:
        story: EventStory | None = await run_in_threadpool(
            self._run, event_story, scope, event_tracker_id
        )
        return story

    async def activity(self, query: ActivityQuery) -> Activity:
        counted: Activity = await run_in_threadpool(self._run, query_activity, query)
        return counted


class CatalogCache:
    """The catalog the planners resolve names with, built once per config store revision from
    the entity service's view (no scripts or business rules compiled: a read needs the
    organizations, templates, assets and rules, not their code)."""

    def __init__(self, entities: EntityService) -> None:
        self.entities = entities
        self._lock = threading.Lock()
        self._built: tuple[int, Catalog] | None = None

    def catalog(self) -> Catalog:
        """Blocking (reads the store when its revision moved)."""
        view = self.entities.view()
        built = self._built
        if built is not None and built[0] == view.revision:
            return built[1]
        with self._lock:
            built = self._built
            if built is not None and built[0] == view.revision:
                return built[1]
            catalog = build_catalog(
                view.entities(), compile_scripts=False, compile_rules=lambda _: False
            )
            self._built = (view.revision, catalog)
            return catalog


def storage_scope(scope: CallerScope) -> Scope:
    """The read side's scope of an API caller (None, the local admin: the platform)."""
    return Scope.platform() if scope.path_key is None else Scope(scope.path_key)


def reads_state(data: StoredData | None, entities: EntityService) -> dict[str, Any]:
    """What :func:`reads_router` finds on ``app.state``."""
    return {"stored": data, "catalogs": CatalogCache(entities)}


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """The read side's refusals as the API's: an unknown or hidden organization 404, any other
    invalid query 422 naming its parameter."""
    try:
        yield
    except UnknownOrganization as exc:
        raise NotFound(exc.message) from None
    except InvalidQuery as exc:
        raise Invalid(
            exc.message, f"query:{api_param(exc.param)}" if exc.param else "query"
        ) from None


_PARAMS = {"org": "orgId", "children": "includeChildren"}


def api_param(param: str) -> str:
    """The query parameter a planner's ``param`` names (``business_rule_id`` is
    ``businessRuleId``; ``where[1]`` stays)."""
    return _PARAMS.get(param) or to_camel(param)


def _stored(request: Request) -> StoredData:
    data: StoredData | None = getattr(request.app.state, "stored", None)
    if data is None:
        raise RetryableError("no event store is attached to this API")
    return data


async def _plan(request: Request, plan: Callable[[Catalog], Any]) -> Any:
    catalogs: CatalogCache = request.app.state.catalogs

    def planned() -> Any:
        with refusals():
            return plan(catalogs.catalog())

    return await run_in_threadpool(planned)


async def _first(fetch: Callable[[Any], Awaitable[Page]], query: Any) -> Page:
    with refusals():
        return await fetch(query)


async def _awaited(fetch: Callable[[Any], Awaitable[Page]], query: Any) -> Page:
    return await fetch(query)


def _stream(
    fetch: Callable[[Any], Awaitable[Page]],
    query: Any,
    first: Page,
    fmt: ExportFormat,
    columns: tuple[str, ...],
    follow_all: bool,
) -> StreamingResponse:
    """The first page (fetched already: its refusals are the answer's status) and, with
    ``follow_all``, every next one, fetched as the response streams (a failure then cuts the
    stream short: the status was sent)."""

    def rest() -> Iterator[Page]:
        cursor = first.next_cursor
        while cursor is not None:
            page = anyio.from_thread.run(_awaited, fetch, dataclasses.replace(query, cursor=cursor))
            yield page
            cursor = page.next_cursor

    pages: Iterator[Page] = itertools.chain([first], rest()) if follow_all else iter([first])
    headers = {}
    if not follow_all and first.next_cursor is not None:
        headers["X-Next-Cursor"] = first.next_cursor
    return StreamingResponse(
        export(pages, fmt, columns=columns), media_type=_MEDIA[fmt], headers=headers
    )


class Format(StrEnum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class LogKind(StrEnum):
    rules = "rules"
    captures = "captures"
    triggers = "triggers"
    raw = "raw"
    dlq = "dlq"
    scripts = "scripts"
    routers = "routers"


assert {k.value for k in LogKind} == set(LOG_KINDS)

OrgId = Annotated[str | None, Query(alias="orgId", description="only this organization (in "
                                    "your scope; unknown or outside it: 404)")]  # fmt: skip
Children = Annotated[bool, Query(alias="includeChildren", description="with orgId: its subtree")]
Since = Annotated[datetime | None, Query(description="created at or after (ISO-8601; no zone: "
                                         "UTC)")]  # fmt: skip
Until = Annotated[datetime | None, Query(description="created before (ISO-8601)")]
Tracker = Annotated[str | None, Query(alias="eventTrackerId")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="rows per page")]
Cursor = Annotated[str | None, Query(description="from the previous page's nextCursor")]
Fmt = Annotated[Format, Query(alias="format", description="json ({rows, nextCursor}), jsonl or "
                              "csv; a page's next cursor is also the X-Next-Cursor header")]  # fmt: skip
All = Annotated[bool, Query(alias="all", description="every page to the end, streamed")]
NewestFirst = Annotated[bool, Query(alias="newestFirst")]
Flag = bool | None


def _where(description: str) -> Any:
    return Query(description=description, max_length=1000)


_ROWS = {"description": "rows as format says (json: {rows, nextCursor}; jsonl: one row per line "
         "then {nextCursor} when more follow; csv: a header, then a line per row)",
         "content": {"application/json": {"schema": {"type": "object"}},
                     "application/x-ndjson": {"schema": {"type": "string"}},
                     "text/csv": {"schema": {"type": "string"}}}}  # fmt: skip


def reads_router() -> APIRouter:
    """The routes (see the module's docstring); they find :func:`reads_state` on
    ``app.state``."""
    router = APIRouter(prefix=PREFIX, tags=["stored data"])

    @router.get("/events", operation_id="query_events", summary="Stored events, filtered",
                responses={200: _ROWS, **_responses(401, 403, 404, 422),
                           503: {"description": "the store is unavailable"}})  # fmt: skip
    async def events(
        request: Request, scope: Viewer, org_id: OrgId = None, include_children: Children = False,
        asset_id: Annotated[str | None, Query(alias="assetId")] = None,
        event_type: Annotated[str | None, Query(alias="eventType")] = None,
        event_tracker_id: Tracker = None, since: Since = None, until: Until = None,
        where: Annotated[list[str] | None, _where(
            "FIELD OP VALUE, repeatable, all must hold: an EVA field by name (temperature > -15,"
            " \"Door open\" = true), by value path (data.doorOpen) or id (#4); OP one of = != >"
            " >= < <=")] = None,
        limit: Limit = 100, cursor: Cursor = None, fmt: Fmt = Format.json, follow_all: All = False,
    ) -> StreamingResponse:  # fmt: skip
        data = _stored(request)
        query: EventQuery = await _plan(request, lambda catalog: plan_event_query(
            catalog, storage_scope(scope), org_id=org_id, include_children=include_children,
            asset_id=asset_id, event_type=event_type, event_tracker_id=event_tracker_id,
            since=since, until=until, where=where or (), limit=limit, cursor=cursor))  # fmt: skip
        first = await _first(data.query_events, query)
        return _stream(data.query_events, query, first, fmt.value,
                       columns_of("events"), follow_all)  # fmt: skip

    @router.get("/events/{event_tracker_id}/story", operation_id="event_story",
                summary="Everything stored about one event, in order",
                responses={200: {"description": "the story: summary and steps"},
                           **_responses(401, 403, 404, 422),
                           503: {"description": "the store is unavailable"}})  # fmt: skip
    async def story(
        request: Request, scope: Viewer,
        event_tracker_id: Annotated[str, Path(min_length=1, max_length=200)],
    ) -> Response:  # fmt: skip
        data = _stored(request)
        found = await data.event_story(storage_scope(scope), event_tracker_id)
        if found is None:
            raise NotFound(f"nothing stored for event tracker id {event_tracker_id!r}")
        body = orjson.dumps(found.to_dict(), default=str, option=orjson.OPT_NON_STR_KEYS)
        return Response(body, media_type="application/json")

    @router.get("/logs/{kind}", operation_id="query_logs",
                summary="Rows of a log table or the DLQ, filtered",
                description="Filters apply to the tables that have them: assetId (all but "
                "routers), businessRuleId, ruleId (rules, captures, triggers), actionId and "
                "triggerId (triggers), dataSourceId (raw, dlq, scripts), routeGroupId (routers), "
                "stage (raw, dlq; the failed stage for scripts), success (triggers, scripts), "
                "matched (rules), errored; where (captures: capture fields, typed by the rules' "
                "captureFields). A filter the table lacks answers 422 naming those it has.",
                responses={200: _ROWS, **_responses(401, 403, 404, 422),
                           503: {"description": "the store is unavailable"}})  # fmt: skip
    async def logs(
        request: Request, scope: Viewer, kind: LogKind, org_id: OrgId = None,
        include_children: Children = False,
        asset_id: Annotated[str | None, Query(alias="assetId")] = None,
        business_rule_id: Annotated[str | None, Query(alias="businessRuleId")] = None,
        rule_id: Annotated[str | None, Query(alias="ruleId")] = None,
        action_id: Annotated[str | None, Query(alias="actionId")] = None,
        trigger_id: Annotated[str | None, Query(alias="triggerId")] = None,
        data_source_id: Annotated[str | None, Query(alias="dataSourceId")] = None,
        route_group_id: Annotated[str | None, Query(alias="routeGroupId")] = None,
        stage: str | None = None, success: Flag = None, matched: Flag = None,
        errored: Flag = None, since: Since = None, until: Until = None,
        event_tracker_id: Tracker = None,
        where: Annotated[list[str] | None, _where(
            "captures only: FIELD OP VALUE on capture fields, repeatable")] = None,
        limit: Limit = 100, cursor: Cursor = None, newest_first: NewestFirst = False,
        fmt: Fmt = Format.json, follow_all: All = False,
    ) -> StreamingResponse:  # fmt: skip
        data = _stored(request)
        query: LogQuery = await _plan(request, lambda catalog: plan_log_query(
            catalog, storage_scope(scope), kind.value, org_id=org_id,
            include_children=include_children, asset_id=asset_id,
            business_rule_id=business_rule_id, rule_id=rule_id, action_id=action_id,
            trigger_id=trigger_id, data_source_id=data_source_id, route_group_id=route_group_id,
            stage=stage, success=success, matched=matched, errored=errored, since=since,
            until=until, event_tracker_id=event_tracker_id, where=where or (), limit=limit,
            cursor=cursor, newest_first=newest_first))  # fmt: skip
        first = await _first(data.query_logs, query)
        return _stream(data.query_logs, query, first, fmt.value,
                       log_columns(LOG_KINDS[kind.value]), follow_all)  # fmt: skip

    return router
