"""``GET /api/v1/manage/overview``: per organization, the last minutes' activity and its lag,
for the console's live Overview (and anyone watching tenants' health through the API).

The cards are one organization (``orgId``, or the caller's own; the platform's roots for the
local administrator) and its children, each counting its whole subtree: events stored, DLQ
entries, trigger deliveries that succeeded and failed, per minute
(:mod:`eventray.pipeline.storage.activity`, counted in the store). The lag of a card is what
its organizations' partitions hold unacknowledged (the lanes' consumer lag): a partition is
shared by every organization hashed to it, so it is the backlog an event of that organization
waits behind, not that organization's own count. ``lag`` is null when the stream cannot say
(NATS unreachable): the counts still answer. ``dlqPending`` is the entries of the subtree not
redriven yet (the DLQ's and the ingress's refusals at bind), counted as the DLQ listing reads
them; ``pendingCapped`` says a source had more than could be counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from eventray.actors.api_app import PREFIX, _responses
from eventray.actors.api_auth import Viewer
from eventray.actors.api_reads import CatalogCache, StoredData, refusals, storage_scope
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import RetryableError, UnknownOrganization
from eventray.pipeline.management import Scope as CallerScope
from eventray.pipeline.models import Organization
from eventray.pipeline.partitioning import partition_of
from eventray.pipeline.storage.activity import MAX_CARDS, MAX_MINUTES, ActivityQuery, Card

__all__ = ["Lag", "overview_router"]

Lag = Callable[[Sequence[int]], Awaitable[dict[int, int]]]
"""The unacknowledged messages of each partition asked (the stream's consumer info)."""


def _cards(catalog: Catalog, scope: CallerScope, org_id: str | None) -> list[Organization]:
    orgs = catalog.orgs
    if org_id is None and scope.path_key is not None:
        org_id = scope.principal.org_id
    if org_id is not None:
        top = orgs.get(org_id)
        if top is None or not scope.covers_path(top.path_key):
            raise UnknownOrganization(org_id)
        children = sorted((o for o in orgs.values() if o.parent_id == top.id), key=lambda o: o.id)
        return [top, *children][:MAX_CARDS]
    roots = sorted((o for o in orgs.values() if o.parent_id is None), key=lambda o: o.id)
    return roots[:MAX_CARDS]


def _partitions_of(
    catalog: Catalog, cards: list[Organization], partitions: int
) -> dict[str, list[int]]:
    """Each card's partitions: those of every organization in its subtree. One pass over the
    organizations (a card is found by the prefix of the organization's pathKey), so a large
    tree costs the same whatever the number of cards."""
    by_path = {card.path_key: card.id for card in cards if card.path_key}
    lengths = {len(path) for path in by_path}
    found: dict[str, set[int]] = {card.id: set() for card in cards}
    for org in catalog.orgs.values():
        path = org.path_key
        for length in lengths:
            if len(path) < length:
                continue
            card = by_path.get(path[:length])
            if card is not None and (len(path) == length or path[length] == "/"):
                found[card].add(partition_of(org.id, partitions))
    return {card: sorted(parts) for card, parts in found.items()}


def overview_router() -> APIRouter:
    """The route; it finds ``stored``, ``catalogs`` (:func:`~eventray.actors.api_reads.
    reads_state`), ``lag`` (a :data:`Lag` or None) and ``partitions`` on ``app.state``."""
    router = APIRouter(prefix=PREFIX, tags=["stored data"])

    @router.get("/overview", operation_id="overview",
                summary="Per organization: activity per minute and partition lag",
                responses={200: {"description": "{since, minutes, pendingCapped, orgs: [{orgId, "
                                 "name, partitions, lag, dlqPending, events[], dlq[], "
                                 "triggersOk[], triggersFailed[]}]}"},
                           **_responses(401, 403, 404, 422),
                           503: {"description": "the store is unavailable"}})  # fmt: skip
    async def overview(
        request: Request, scope: Viewer,
        org_id: Annotated[str | None, Query(alias="orgId", description="this organization and "
                          "its children (default: your own)")] = None,
        minutes: Annotated[int, Query(ge=1, le=MAX_MINUTES)] = 10,
    ) -> Response:  # fmt: skip
        stored: StoredData | None = getattr(request.app.state, "stored", None)
        if stored is None:
            raise RetryableError("no event store is attached to this API")
        catalogs: CatalogCache = request.app.state.catalogs

        def plan() -> tuple[Catalog, list[Organization], ActivityQuery]:
            with refusals():
                catalog = catalogs.catalog()
                cards = _cards(catalog, scope, org_id)
                query = ActivityQuery(
                    storage_scope(scope),
                    tuple(Card(o.id, o.path_key) for o in cards if o.path_key),
                    minutes=minutes,
                )
                return catalog, cards, query

        catalog, cards, query = await run_in_threadpool(plan)
        with refusals():
            activity = await stored.activity(query)
        partitions: int = request.app.state.partitions
        per_card = _partitions_of(catalog, cards, partitions)
        lag_of: Lag | None = getattr(request.app.state, "lag", None)
        pending: dict[int, int] | None = None
        if lag_of is not None:
            try:
                pending = await lag_of(sorted({p for ps in per_card.values() for p in ps}))
            except RetryableError:
                pending = None
        body: dict[str, Any] = {
            "since": activity.since.isoformat().replace("+00:00", "Z"),
            "minutes": activity.minutes, "pendingCapped": activity.pending_capped,
            "orgs": [
                {"orgId": o.id, "name": o.name, "partitions": per_card[o.id],
                 "lag": None if pending is None else sum(pending.get(p, 0) for p in per_card[o.id]),
                 "dlqPending": activity.pending.get(o.id, 0),
                 **activity.series.get(o.id, {})}
                for o in cards
            ],
        }  # fmt: skip
        return Response(orjson.dumps(body), media_type="application/json")

    return router
