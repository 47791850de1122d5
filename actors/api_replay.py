"""Routes over the dead-letter queue and the stream: list DLQ entries, redrive them, replay a
range of an organization's events, each within the caller's scope (its organization's subtree).

The work is the :class:`~eventray.pipeline.replay.ReplayService`'s, reached through
:class:`Replays` on ``app.state.replays``. In the stack that is :class:`ReplayActorClient`: the
service runs in the ``replay`` actor, whose NATS user may append to the partitions and the
trigger queue and read the stream (see the composition root's roles), so this process, which faces
the network, never holds a credential that can publish into a partition; it hands the actor the
caller's scope, which the service enforces.

Roles: a viewer lists; an editor (or admin) redrives and replays: putting a tenant's events
through its current configuration again is the same trust as changing that configuration
(an editor may change templates and rules, which decides how every later event is processed,
and create the triggers a replay with ``triggers`` would send again). ``dryRun=true`` changes
nothing and shows what would be done.

Statuses: 404 an ``orgId`` unknown or outside the scope (one answer); 422 a request that cannot
run as given (no selection and not ``all``, an empty range); 503 the stream or the store is
unavailable (what was done stays done: a redrive is once per entry, a replay with the same
``id`` appends nothing twice).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eventray.actors.api_app import PREFIX, JSONResponse, _responses
from eventray.actors.api_auth import Editor, Viewer
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.management import Invalid, NotFound
from eventray.pipeline.management import Scope as CallerScope
from eventray.pipeline.replay import (
    DeadLetter,
    DeadLetterPosition,
    DeadLetterSource,
    InvalidRequest,
    OutOfScope,
    RedriveReport,
    RedriveRequest,
    ReplayReport,
    ReplayRequest,
    Scope,
)
from eventray.pipeline.replay.outputs import (
    dead_letter_out,
    redrive_item_out,
    redrive_summary,
    replay_summary,
)

__all__ = ["RedriveBody", "ReplayActorClient", "ReplayBody", "Replays", "replay_router"]

_SOURCES: dict[str, tuple[DeadLetterSource, ...]] = {
    "dlq": ("dlq",), "raw": ("events_raw",), "all": ("dlq", "events_raw"),
}  # fmt: skip
MAX_WAIT_S = 120.0


def dlq_cursor(items: list[DeadLetter], limit: int) -> str | None:
    """The next page's cursor: per source that filled its page, its last entry's position
    (opaque to clients: base64url of JSON); None when no source has more."""
    last: dict[str, DeadLetterPosition] = {}
    counts: dict[str, int] = {}
    for entry in items:
        counts[entry.source] = counts.get(entry.source, 0) + 1
        last[entry.source] = entry.position
    more = {source: list(at) for source, at in last.items() if counts[source] >= limit}
    if not more:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(more)).decode().rstrip("=")


def dlq_after(cursor: str) -> dict[str, DeadLetterPosition]:
    """A :func:`dlq_cursor` read back (422 on anything else)."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after: dict[str, DeadLetterPosition] = {}
        for source, at in raw.items():
            ms, tracker, stage, seq = at
            if source not in _SOURCES["all"] or not (
                type(ms) is int and type(seq) is int and isinstance(tracker, str)
                and isinstance(stage, str)
            ):  # fmt: skip
                raise ValueError(source)
            after[source] = (ms, tracker, stage, seq)
    except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise Invalid("not a cursor this listing gave (use nextCursor as is)",
                      "query:cursor") from None  # fmt: skip
    if not after:
        raise Invalid("not a cursor this listing gave (use nextCursor as is)", "query:cursor")
    return after


class Replays(Protocol):
    """The replay service's calls (:class:`~eventray.pipeline.replay.ReplayService` has them)."""

    async def dead_letters(
        self, scope: Scope, request: RedriveRequest, *, redriven: bool | None = None,
        limit: int = 100, after: Mapping[str, DeadLetterPosition] | None = None,
    ) -> list[DeadLetter]: ...  # fmt: skip

    async def redrive(
        self, scope: Scope, request: RedriveRequest, *, dry_run: bool = False,
        requested_by: str = "", redrive_id: str | None = None,
    ) -> RedriveReport: ...  # fmt: skip

    async def replay(
        self, scope: Scope, request: ReplayRequest, *, dry_run: bool = False,
        replay_id: str | None = None,
    ) -> ReplayReport: ...  # fmt: skip

    async def wait(self, copies: Mapping[int, int], *, timeout_s: float) -> bool: ...


class ReplayActorClient:
    """:class:`Replays` over the stack's ``replay`` actor (found by name in this process's Ray
    namespace); the service's refusals come back as themselves."""

    def __init__(self, name: str = "replay") -> None:
        self.name = name
        self._handle: Any = None

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            if self._handle is None:
                self._handle = ray.get_actor(self.name)
            return await getattr(self._handle, method).remote(*args, **kwargs)
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, Exception) and not isinstance(cause, RayError):
                raise cause from None
            raise RetryableError(f"the replay service failed: {exc}") from None
        except (RayError, ValueError) as exc:  # ValueError: no actor of that name (yet)
            self._handle = None
            raise RetryableError(
                f"the replay service is unavailable: {type(exc).__name__}"
            ) from None

    async def dead_letters(
        self, scope: Scope, request: RedriveRequest, *, redriven: bool | None = None,
        limit: int = 100, after: Mapping[str, DeadLetterPosition] | None = None,
    ) -> list[DeadLetter]:  # fmt: skip
        found: list[DeadLetter] = await self._call(
            "dead_letters", scope, request, redriven=redriven, limit=limit, after=after
        )
        return found

    async def redrive(
        self, scope: Scope, request: RedriveRequest, *, dry_run: bool = False,
        requested_by: str = "", redrive_id: str | None = None,
    ) -> RedriveReport:  # fmt: skip
        report: RedriveReport = await self._call(
            "redrive", scope, request, dry_run=dry_run, requested_by=requested_by,
            redrive_id=redrive_id,
        )  # fmt: skip
        return report

    async def replay(
        self, scope: Scope, request: ReplayRequest, *, dry_run: bool = False,
        replay_id: str | None = None,
    ) -> ReplayReport:  # fmt: skip
        report: ReplayReport = await self._call(
            "replay", scope, request, dry_run=dry_run, replay_id=replay_id
        )
        return report

    async def wait(self, copies: Mapping[int, int], *, timeout_s: float) -> bool:
        done: bool = await self._call("wait", dict(copies), timeout_s=timeout_s)
        return done


def replay_scope(scope: CallerScope) -> Scope:
    """The replay service's scope of an API caller (the local admin: everything)."""
    return Scope.everything() if scope.path_key is None else Scope(scope.path_key)


def _ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """The service's refusals as the API's."""
    try:
        yield
    except OutOfScope as exc:
        raise NotFound(str(exc)) from None
    except InvalidRequest as exc:
        raise Invalid(str(exc)) from None


def _replays(request: Request) -> Replays:
    service: Replays | None = getattr(request.app.state, "replays", None)
    if service is None:
        raise RetryableError("no replay service is attached to this API")
    return service


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Id = Annotated[str, Field(min_length=1, max_length=200)]


class RedriveBody(_Body):
    """What to redrive: one event (``eventTrackerId``), the entries matching the filters (they
    combine), or everything in your scope (``all``, with no filter)."""

    event_tracker_id: Id | None = None
    stage: Id | None = Field(None, description="the failing stage: script, transform, bind, ...")
    org_id: Id | None = Field(None, description="an organization and those below it")
    asset_id: Id | None = None
    since: datetime | None = Field(None, description="entries made at or after (ISO-8601)")
    until: datetime | None = Field(None, description="entries made before (ISO-8601)")
    source: Literal["dlq", "raw", "all"] = Field(
        "all", description="the DLQ, ingress refusals at bind (events_raw), or both"
    )
    all: bool = Field(False, description="every entry in your scope (only with no filter)")
    limit: int | None = Field(None, ge=1, le=100_000, description="the most entries redriven")


class ReplayBody(_Body):
    """A range of an organization's events to process again: received in ``[since, until)``
    (``until``: now) or stream sequences ``[fromSeq, toSeq)``."""

    org_id: Id
    include_children: bool = False
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = Field(None, ge=1, le=2**63 - 1)
    to_seq: int | None = Field(None, ge=1, le=2**63 - 1)
    state: Literal["keep", "fresh"] = Field(
        "keep", description="keep: rules not evaluated again (state, rule logs and rule "
        "deliveries stay); fresh: the organizations' rule state reset, then rebuilt from the "
        "range")  # fmt: skip
    triggers: bool = Field(False, description="send the events' trigger deliveries again")
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] | None = (
        Field(None, description="the replay's id (run again with it to finish one cut short)")
    )


class Redriven(StrEnum):
    yes = "yes"
    no = "no"
    all = "all"


DryRun = Annotated[bool, Query(alias="dryRun", description="show what would be done; change "
                               "nothing")]  # fmt: skip
Wait = Annotated[float | None, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait until "
                                     "the lanes processed the copies (then processed: "
                                     "true/false)")]  # fmt: skip
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the stream or the store is unavailable"}
}


def _who(scope: CallerScope) -> str:
    p = scope.principal
    return f"api:{p.name} ({p.token_id})"


def replay_router() -> APIRouter:
    """The routes (see the module's docstring); they find a :class:`Replays` on
    ``app.state.replays``."""
    router = APIRouter(prefix=PREFIX, tags=["redrive and replay"])

    @router.get("/dlq", operation_id="list_dead_letters",
                summary="DLQ entries and ingress refusals at bind, with their redrive records",
                responses={200: {"description": "{items, nextCursor}: oldest first, per "
                                 "source; nextCursor (null at the end) reads the next page"},
                           **_responses(401, 403, 404, 422), **_UNAVAILABLE})  # fmt: skip
    async def dead_letters(
        request: Request, scope: Viewer,
        event_tracker_id: Annotated[str | None, Query(alias="eventTrackerId", min_length=1)] = None,
        stage: Annotated[str | None, Query(min_length=1)] = None,
        org_id: Annotated[str | None, Query(alias="orgId", min_length=1)] = None,
        asset_id: Annotated[str | None, Query(alias="assetId", min_length=1)] = None,
        since: datetime | None = None, until: datetime | None = None,
        source: Annotated[Literal["dlq", "raw", "all"], Query()] = "all",
        redriven: Redriven = Redriven.all,
        limit: Annotated[int, Query(ge=1, le=1000, description="entries per source")] = 100,
        cursor: Annotated[str | None, Query(max_length=2000, description="the previous "
                                            "answer's nextCursor (the same filters)")] = None,
    ) -> JSONResponse:  # fmt: skip
        selection = RedriveRequest(
            event_tracker_id=event_tracker_id, stage=stage, org_id=org_id,
            since_ms=_ms(since), until_ms=_ms(until), asset_id=asset_id,
            sources=_SOURCES[source],
        )  # fmt: skip
        if not selection.filtered:
            selection = RedriveRequest(sources=selection.sources, everything=True)
        flag = {"yes": True, "no": False, "all": None}[redriven.value]
        with refusals():
            found = await _replays(request).dead_letters(
                replay_scope(scope), selection, redriven=flag, limit=limit,
                after=dlq_after(cursor) if cursor else None,
            )  # fmt: skip
        return JSONResponse({"items": [dead_letter_out(entry) for entry in found],
                             "nextCursor": dlq_cursor(found, limit)})  # fmt: skip

    @router.post("/dlq/redrive", operation_id="redrive",
                 summary="Put DLQ entries back into the pipeline, once each (editors)",
                 responses={200: {"description": "{items: per entry its outcome, summary}"},
                            **_responses(401, 403, 404, 413, 422), **_UNAVAILABLE})  # fmt: skip
    async def redrive(
        request: Request, scope: Editor, body: RedriveBody, dry_run: DryRun = False,
        wait: Wait = None,
    ) -> JSONResponse:  # fmt: skip
        selection = RedriveRequest(
            event_tracker_id=body.event_tracker_id, stage=body.stage, org_id=body.org_id,
            since_ms=_ms(body.since), until_ms=_ms(body.until), asset_id=body.asset_id,
            sources=_SOURCES[body.source], everything=body.all, limit=body.limit,
        )  # fmt: skip
        service = _replays(request)
        with refusals():
            report = await service.redrive(
                replay_scope(scope), selection, dry_run=dry_run, requested_by=_who(scope)
            )
            processed = None
            if wait is not None and report.copies:
                processed = await service.wait(report.copies, timeout_s=wait)
        return JSONResponse({"items": [redrive_item_out(item) for item in report.items],
                             "summary": redrive_summary(report, processed)})  # fmt: skip

    @router.post("/replays", operation_id="replay",
                 summary="Process a range of an organization's events again (editors)",
                 responses={200: {"description": "the replay's summary"},
                            **_responses(401, 403, 404, 413, 422), **_UNAVAILABLE})  # fmt: skip
    async def replay(
        request: Request, scope: Editor, body: ReplayBody, dry_run: DryRun = False,
        wait: Wait = None,
    ) -> JSONResponse:  # fmt: skip
        if body.since is None and body.from_seq is None:
            raise Invalid("give the range's start: since or fromSeq", "since")
        selection = ReplayRequest(
            org_id=body.org_id, since_ms=_ms(body.since), until_ms=_ms(body.until),
            start_seq=body.from_seq, end_seq=body.to_seq,
            include_children=body.include_children, state=body.state, triggers=body.triggers,
        )  # fmt: skip
        service = _replays(request)
        with refusals():
            report = await service.replay(
                replay_scope(scope), selection, dry_run=dry_run, replay_id=body.id
            )
            processed = None
            if wait is not None and report.copies:
                processed = await service.wait(report.copies, timeout_s=wait)
        return JSONResponse(replay_summary(report, processed))

    return router
