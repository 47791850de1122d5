"""DLQ redrive: put failed events back into the pipeline once their template or rule is fixed.

**What a redrive does.** For each entry selected (in the caller's scope, oldest first), it
appends a *copy* of the event to its partition of the stream: the original body, the headers
the event had (data source, received time, organization, asset: read back from the stream
while it still holds the original message, else from the entry), the eventTrackerId in
``Eventray-Tracker`` and the current config revision (a lane that has not reloaded the fix
yet catches up before it processes the copy). The lanes then process the copy like any
event: in its partition's order, its rule state under the sequence fence, its rows, its
deliveries. A delivery that failed (stage ``trigger:<id>``) is put back on the trigger queue
instead. Ingress refusals kept in ``events_raw`` at stage ``bind`` (422: no asset took them)
are redriven the same way once an asset binds them; ``auth`` refusals (401) never are.

**Once.** Two guards, one for each way an entry could be redriven twice:

- a durable *redrive record* (a ``dlq_redrive`` row: which entry, by which redrive, into which
  stream message), written once the stream holds the copy; an entry with a record is never
  selected again, however long after;
- the copy's ``Nats-Msg-Id`` is derived from the entry (``redrive:<tracker>:<source>:<stage>:
  <stream seq>``), so two redrives racing for the same entry, or one that crashed between the
  stream's answer and the record, append it once: the stream drops the second copy within its
  duplicate window (``nats.duplicate_window_s``, 10 minutes by default) and answers with the
  first one's sequence, and the record is written then.

Only a redrive that crashed after the append and before the record *and* is run again after
the duplicate window would process an entry twice.

**Afterwards.** The entry stays in the DLQ, with its record beside it (the history: the read
side joins them). If the copy fails again, that is a new DLQ row (the DLQ key includes the
stream message), pending again, with the new error; the record keeps the old one.

**What is not redriven** (``skipped``, with the reason; it stays pending): rows the store
itself refused (``store:<table>``: they hold a stored row, not an event), a replay's reset
marker, an event that binds to no asset in the current configuration (fix it, then redrive).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import orjson

from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ingress import (
    HEADER_ASSET,
    HEADER_ORG,
    HEADER_RECEIVED,
    HEADER_REVISION,
    HEADER_SOURCE,
)
from eventray.pipeline.models import Asset
from eventray.pipeline.partitioning import partition_of, subject_for
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.replay.model import (
    DeadLetter,
    DeadLetterPosition,
    DeadLetterQuery,
    InvalidRequest,
    RedriveItem,
    RedriveRecord,
    RedriveReport,
    RedriveRequest,
    Scope,
)
from eventray.pipeline.replay.ports import DeadLetterStore, EventArchive, StoredMessage
from eventray.pipeline.replay.scoping import path_of_org
from eventray.pipeline.replay_marks import (
    HEADER_REDRIVE,
    HEADER_TRACKER,
    mark_headers,
    parse_mark,
)
from eventray.pipeline.triggers.delivery import DeliveryGroup
from eventray.pipeline.triggers.requests import DeliveryJob

__all__ = ["Redriver", "redrive_msg_id"]

_PAGE = 500


def redrive_msg_id(entry: DeadLetter) -> str:
    """The copy's ``Nats-Msg-Id``: the same for every redrive of one entry (see the module
    docstring), different for each entry of an event."""
    return f"redrive:{entry.event_tracker_id}:{entry.source}:{entry.stage}:{entry.stream_seq}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """An entry and the message that redrives it (or why none can)."""

    entry: DeadLetter
    message: OutboxMessage | None
    partition: int = -1
    reason: str = ""


class Redriver:
    """Selects entries in scope and redrives them (see the module docstring).

    Args:
        catalog: the configuration now (read per call: a redrive follows a fix).
        archive: the stream.
        store: the DLQ, the refusals and the redrive records.
        partitions: the stream's partition count.
        subject_prefix: partition subjects are ``{prefix}.p{n}``.
        trigger_subject: the trigger queue's subject.
        now_ms: the clock (epoch milliseconds).
    """

    def __init__(
        self,
        *,
        catalog: Callable[[], Catalog],
        archive: EventArchive,
        store: DeadLetterStore,
        partitions: int,
        subject_prefix: str,
        trigger_subject: str,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._catalog = catalog
        self._archive = archive
        self._store = store
        self._partitions = partitions
        self._prefix = subject_prefix
        self._trigger_subject = trigger_subject
        self._now_ms = now_ms

    def queries(
        self, scope: Scope, request: RedriveRequest, catalog: Catalog, *, redriven: bool | None
    ) -> list[DeadLetterQuery]:
        """The store queries of ``request`` for a caller in ``scope``, one per source.

        Raises:
            OutOfScope: ``request.org_id`` is not in scope (or does not exist).
            InvalidRequest: nothing selects the entries and ``everything`` is not set.
        """
        if not request.filtered and not request.everything:
            raise InvalidRequest(
                "name what to redrive (an eventTrackerId, a stage, an organization, a time "
                "range, an asset) or ask for everything in scope"
            )
        if (
            request.since_ms is not None
            and request.until_ms is not None
            and request.until_ms <= request.since_ms
        ):
            raise InvalidRequest("the time range is empty (until is not after since)")
        if request.limit is not None and request.limit < 1:
            raise InvalidRequest(f"limit must be at least 1, got {request.limit}")
        path_key = path_of_org(scope, catalog, request.org_id) if request.org_id else ""
        return [
            DeadLetterQuery(
                source=source,
                scope=scope.path_key,
                path_key=path_key,
                event_tracker_id=request.event_tracker_id,
                stage=request.stage,
                asset_id=request.asset_id,
                since_ms=request.since_ms,
                until_ms=request.until_ms,
                redriven=redriven,
            )
            for source in dict.fromkeys(request.sources)
        ]

    async def entries(
        self, scope: Scope, request: RedriveRequest, *, redriven: bool | None = None, limit: int,
        after: Mapping[str, DeadLetterPosition] | None = None,
    ) -> list[DeadLetter]:  # fmt: skip
        """Entries the request selects (redriven or not, by default both), oldest first per
        source, at most ``limit`` per source: what the DLQ holds for the caller, with each
        entry's redrive record. ``after`` (the next page): per source, the entries after that
        :attr:`DeadLetter.position`; a source it does not name is done (not read)."""
        catalog = self._catalog()
        out: list[DeadLetter] = []
        for query in self.queries(scope, request, catalog, redriven=redriven):
            if after is not None and query.source not in after:
                continue
            start = after[query.source] if after is not None else None
            out.extend(await self._store.find(replace(query, after=start, limit=limit)))
        return out

    async def redrive(
        self,
        scope: Scope,
        request: RedriveRequest,
        *,
        dry_run: bool = False,
        requested_by: str = "",
        redrive_id: str | None = None,
    ) -> RedriveReport:
        """Redrive the entries ``request`` selects in ``scope`` that were not redriven yet.

        Args:
            scope: the caller's reach; entries outside it are never read.
            request: what to redrive.
            dry_run: select and plan only: the report says what would be redriven (and what
                would be skipped, and why); nothing is appended or recorded.
            requested_by: who asks (kept in the records).
            redrive_id: an id for this redrive (default: a new one).

        Raises:
            OutOfScope, InvalidRequest: see :meth:`queries`.
            RetryableError: the stream or the store is unavailable (what was redriven before
                stays redriven; run it again for the rest).
        """
        catalog = self._catalog()
        binder = AssetBinder(catalog)
        report = RedriveReport(redrive_id or uuid.uuid4().hex[:16], dry_run)
        left = request.limit
        for query in self.queries(scope, request, catalog, redriven=False):
            after: DeadLetterPosition | None = None
            while left is None or left > 0:
                size = _PAGE if left is None else min(_PAGE, left)
                page = await self._store.find(replace(query, after=after, limit=size))
                if not page:
                    break
                after = page[-1].position
                plans = [
                    await self._plan(entry, binder, scope, report.redrive_id) for entry in page
                ]
                if dry_run:
                    report.items.extend(_dry(plan) for plan in plans)
                else:
                    report.items.extend(await self._send(plans, report.redrive_id, requested_by))
                if left is not None:
                    left -= len(page)
                if len(page) < size:
                    break
        return report

    async def _send(
        self, plans: Sequence[_Plan], redrive_id: str, requested_by: str
    ) -> list[RedriveItem]:
        sendable = [plan for plan in plans if plan.message is not None]
        answers = await self._archive.append([p.message for p in sendable if p.message])
        answered = dict(zip((id(p) for p in sendable), answers, strict=True))
        items: list[RedriveItem] = []
        records: list[RedriveRecord] = []
        now = self._now_ms()
        for plan in plans:
            entry = plan.entry
            answer = answered.get(id(plan))
            if plan.message is None or answer is None:
                items.append(RedriveItem(entry, "skipped", plan.reason))
                continue
            if answer.error:
                items.append(RedriveItem(entry, "failed", answer.error, plan.partition))
                continue
            records.append(
                RedriveRecord(
                    entry.source, entry.event_tracker_id, entry.org_id, entry.path_key,
                    entry.stage, entry.stream_seq, entry.created_ms, entry.error, redrive_id,
                    requested_by, plan.message.msg_id, plan.partition, answer.seq, now,
                )
            )  # fmt: skip
            items.append(
                RedriveItem(entry, "redriven", "", plan.partition, answer.seq, answer.duplicate)
            )
        if records:
            await self._store.record(records)
        return items

    async def _plan(
        self, entry: DeadLetter, binder: AssetBinder, scope: Scope, redrive_id: str
    ) -> _Plan:
        catalog = binder.catalog
        stage = entry.stage
        if stage.startswith("store:"):
            return _Plan(entry, None, reason="a row the store refused, not an event")
        if stage in ("trigger", "replay:reset"):
            return _Plan(entry, None, reason=f"stage {stage!r} holds no event to redrive")
        if stage.startswith("trigger:"):
            return self._trigger_plan(entry, scope)
        original = await self._original(entry)
        headers = dict(original.headers) if original is not None else {}
        target = _target(entry, headers, binder)
        if isinstance(target, str):
            return _Plan(entry, None, reason=target)
        if not scope.covers(catalog.orgs[target.org_id].path_key):
            return _Plan(entry, None, reason=f"asset {target.id!r} is outside the scope")
        partition = partition_of(target.org_id, self._partitions)
        out = {
            HEADER_SOURCE: headers.get(HEADER_SOURCE) or entry.data_source_id,
            HEADER_RECEIVED: headers.get(HEADER_RECEIVED) or str(entry.created_ms),
            HEADER_ORG: target.org_id,
            HEADER_ASSET: target.id,
            HEADER_TRACKER: entry.event_tracker_id,
            HEADER_REDRIVE: redrive_id,
        }
        if catalog.revision:
            out[HEADER_REVISION] = str(catalog.revision)
        mark = parse_mark(headers)
        if mark is not None and not mark.control:
            # A replay's copy that failed: redriven as that replay's copy (a ``keep`` one must
            # not count in the rule state a second time).
            out.update(mark_headers(mark))
        message = OutboxMessage(
            subject_for(self._prefix, partition), entry.body, redrive_msg_id(entry), out
        )
        return _Plan(entry, message, partition)

    def _trigger_plan(self, entry: DeadLetter, scope: Scope) -> _Plan:
        try:
            job = DeliveryJob.from_bytes(entry.body)
        except (ValueError, KeyError, TypeError) as exc:
            return _Plan(entry, None, reason=f"not a delivery: {exc}")
        if not scope.covers(job.path_key) or job.org_id != entry.org_id:
            return _Plan(entry, None, reason="the delivery is outside the scope")
        group = DeliveryGroup((job,), job.mode, job.on_error)
        return _Plan(
            entry, OutboxMessage(self._trigger_subject, group.to_bytes(), redrive_msg_id(entry))
        )

    async def _original(self, entry: DeadLetter) -> StoredMessage | None:
        """The stream's original message of a DLQ entry while the stream holds it (its exact
        headers), else None."""
        if entry.source != "dlq" or not entry.stream_seq or not entry.org_id:
            return None
        subject = subject_for(self._prefix, partition_of(entry.org_id, self._partitions))
        with contextlib.suppress(Exception):  # gone, or unreadable: the entry has the rest
            found = await self._archive.get(subject, entry.stream_seq)
            if found is not None and _tracker_of(found.headers) == entry.event_tracker_id:
                return found
        return None


def _target(entry: DeadLetter, headers: Mapping[str, str], binder: AssetBinder) -> Asset | str:
    """The asset the copy goes to, by the current configuration; or why there is none."""
    catalog = binder.catalog
    source_id = headers.get(HEADER_SOURCE) or entry.data_source_id
    source = catalog.data_sources.get(source_id)
    if source is None:
        return f"data source {source_id!r} does not exist (any more)"
    asset = catalog.assets.get(headers.get(HEADER_ASSET) or entry.asset_id)
    if asset is None or not catalog.is_ancestor_or_self(source.org_id, asset.org_id):
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:
            return "the body is not JSON and names no asset: it binds to none"
        bound = binder.bind(source, body) if isinstance(body, dict) else None
        if not isinstance(bound, Asset):
            return f"binds to no asset yet: {bound or 'the body is not a JSON object'}"
        asset = bound
    if not asset.enabled:
        return f"asset {asset.id!r} is disabled"
    return asset


def _tracker_of(headers: Mapping[str, str]) -> str:
    return headers.get(HEADER_TRACKER) or headers.get("Nats-Msg-Id") or ""


def _dry(plan: _Plan) -> RedriveItem:
    if plan.message is None:
        return RedriveItem(plan.entry, "skipped", plan.reason)
    return RedriveItem(plan.entry, "would-redrive", "", plan.partition)
