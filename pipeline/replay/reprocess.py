"""Replay: process a time range of the stream again for an organization, after a template or
rule change.

**How.** The stream keeps every event for its retention window (see the README's "Retention
and replay"). A replay reads the organization's partition(s) from the range's start (a
JetStream consumer positioned by start time, or by stream sequence), selects the events of the
organization (and of the organizations below it, if asked) received in the range, and appends
a *copy* of each to the same partition, marked as a replay's (:mod:`eventray.pipeline.
replay_marks`). The lanes process the copies in stream order like any event: the current
template, routing and EVA, rows, and (per the state mode) rules.

**Semantics.**

- *Rows are replaced, not duplicated.* A copy keeps its eventTrackerId, so its rows have the
  keys of the first run's: ``events`` is sorted by ``(path_key, created, event_tracker_id)``
  with no version column, so ``FINAL`` (and the merges) keep the row inserted last: the
  replay's. ``logs_*`` rows are keyed by organization and eventTrackerId (plus the business
  rule, the capture's position...) and are replaced the same way. **Limit:** if the change
  gives an event another ``created`` (the template now reads another field) or its asset
  moved to another organization since, the replayed row has another key and the first run's
  row stays beside it.
- *Rule state*, the caller's choice: ``keep`` evaluates no rule again (state, ``logs_rule``,
  ``logs_capture`` and rule deliveries stay as the first run left them: a template change);
  ``fresh`` first appends a *reset marker* to each partition: when its lane reaches it, every
  state variable of the business rules that apply to the replay's organizations goes back to
  its default (under the sequence fence, so a redelivered marker resets nothing), then the
  copies are evaluated on that state in order (a rule change). The range is read up to the
  marker, so every event before the marker is replayed after it, and every event after it is
  a new one: each counts once. **Limits** of ``fresh``: events of those organizations before
  the range's start (or after its ``until``, up to the marker) no longer count; rules see the
  time of the replay (time conditions, cooldowns and ``now`` are evaluated as of the replay,
  not as of the events); events that arrive while the copies are appended are evaluated
  between them (each once, but out of their order of arrival); other organizations of the
  partition are untouched.
- *Triggers* are not sent again unless asked (``triggers``); then deliveries are new ones
  (their de-duplication id names the replay, so the stream does not drop them as repeats).
- *The fence.* Copies are new messages with new stream sequences: the lanes' effectively-once
  machinery treats each as one message (a copy delivered twice after a crash is applied
  once), and the first run's sequences, which the rule state's fence has passed, are never
  fed again (the fence would refuse them: a "fresh" replay would rebuild nothing).

Every copy carries the replay's id: a later replay never takes copies (nor redriven copies of
events it already selected: each event once) for events. A replay run again with the same id
inside the stream's duplicate window appends nothing twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

import orjson

from eventray.pipeline.binding import AssetBinder
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ingress import HEADER_ASSET, HEADER_ORG, HEADER_RECEIVED, HEADER_REVISION
from eventray.pipeline.ingress import HEADER_SOURCE as HEADER_DATA_SOURCE
from eventray.pipeline.partitioning import partition_of, subject_for
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.replay.model import (
    DeadLetter,
    DeadLetterPosition,
    DeadLetterQuery,
    InvalidRequest,
    PartitionReplay,
    RedriveRecord,
    ReplayReport,
    ReplayRequest,
    Scope,
)
from eventray.pipeline.replay.ports import DeadLetterStore, EventArchive, StoredMessage
from eventray.pipeline.replay.scoping import orgs_under, path_of_org
from eventray.pipeline.replay_marks import (
    HEADER_REDRIVE,
    HEADER_REPLAY_OF,
    HEADER_TRACKER,
    ReplayMark,
    mark_headers,
    parse_mark,
)

__all__ = ["Replayer", "replay_msg_id"]

_SLACK_MS = 60_000  # the stream stores an event a moment after the ingress received it
_APPEND_CHUNK = 1000
_SAMPLE = 20


def replay_msg_id(replay_id: str, tracker: str) -> str:
    """A copy's ``Nats-Msg-Id``: one per event and replay."""
    return f"replay:{replay_id}:{tracker}"


class Replayer:
    """Reads ranges of the stream and appends the copies (see the module docstring).

    Args:
        catalog: the configuration now.
        archive: the stream.
        partitions: the stream's partition count.
        subject_prefix: partition subjects are ``{prefix}.p{n}``.
        store: the DLQ: a ``fresh`` replay marks the pending entries of the events it copied
            as handled (their copies count in the rebuilt state; a later redrive would count
            them twice). None: leave them.
        now_ms: the clock (epoch milliseconds).
    """

    def __init__(
        self,
        *,
        catalog: Callable[[], Catalog],
        archive: EventArchive,
        partitions: int,
        subject_prefix: str,
        store: DeadLetterStore | None = None,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._catalog = catalog
        self._archive = archive
        self._store = store
        self._partitions = partitions
        self._prefix = subject_prefix
        self._now_ms = now_ms

    async def replay(
        self,
        scope: Scope,
        request: ReplayRequest,
        *,
        dry_run: bool = False,
        replay_id: str | None = None,
    ) -> ReplayReport:
        """Replay ``request``'s range for a caller in ``scope``.

        Args:
            scope: the caller's reach: the organization must be in it; no other
                organization's event is read into the replay, nor its state reset.
            request: the range, the organizations, the state mode, triggers.
            dry_run: read and select only: the report counts what would be replayed (and
                samples the eventTrackerIds); nothing is appended, no state is reset.
            replay_id: an id for this replay (default: a new one); the same id run again
                inside the stream's duplicate window appends nothing twice.

        Raises:
            OutOfScope: the organization is not in scope (or does not exist).
            InvalidRequest: no range, or an empty one.
            RetryableError: the stream is unavailable (copies appended so far stay; run it
                again with the same ``replay_id`` to finish without repeats).
        """
        _check(request)
        catalog = self._catalog()
        path_key = path_of_org(scope, catalog, request.org_id)
        orgs = orgs_under(catalog, path_key, children=request.include_children)
        report = ReplayReport(replay_id or uuid.uuid4().hex[:16], dry_run, request)
        mark = ReplayMark(report.replay_id, request.state, request.triggers)
        by_partition: dict[int, list[str]] = {}
        for org_id in orgs:
            by_partition.setdefault(partition_of(org_id, self._partitions), []).append(org_id)
        binder = AssetBinder(catalog)
        for partition in sorted(by_partition):
            share = PartitionReplay(partition, tuple(by_partition[partition]))
            report.partitions.append(share)
            copied = await self._partition(share, request, mark, binder, report, dry_run=dry_run)
            if copied and request.state == "fresh" and self._store is not None:
                share.superseded = await self._supersede(
                    scope, path_key, request, share, copied, report.replay_id
                )
        return report

    async def _supersede(
        self,
        scope: Scope,
        path_key: str,
        request: ReplayRequest,
        share: PartitionReplay,
        copied: Mapping[str, int],
        replay_id: str,
    ) -> int:
        """Record the pending DLQ entries of the events a fresh replay copied as handled by
        it (source ``dlq``, redrive id = the replay's): their copies were evaluated in the
        rebuilt state."""
        assert self._store is not None
        query = DeadLetterQuery(
            "dlq", scope=scope.path_key, path_key=path_key, since_ms=request.since_ms,
            until_ms=request.until_ms, redriven=False,
        )  # fmt: skip
        orgs = set(share.orgs)
        now = self._now_ms()
        total = 0
        after: DeadLetterPosition | None = None
        while True:
            page = await self._store.find(replace(query, after=after))
            if not page:
                return total
            after = page[-1].position
            records = [
                _superseded(e, replay_id, share.partition, copied[e.event_tracker_id], now)
                for e in page
                if e.org_id in orgs and e.event_tracker_id in copied
            ]
            if records:
                await self._store.record(records)
                total += len(records)
            if len(page) < query.limit:
                return total

    async def _partition(
        self,
        share: PartitionReplay,
        request: ReplayRequest,
        mark: ReplayMark,
        binder: AssetBinder,
        report: ReplayReport,
        *,
        dry_run: bool,
    ) -> dict[str, int]:
        """Select and copy one partition's events; returns the stream sequence of each
        event's copy, by eventTrackerId."""
        subject = subject_for(self._prefix, share.partition)
        bounds = await self._archive.bounds(subject)
        if (
            request.since_ms is not None
            and bounds.dropped
            and bounds.first_seq
            and bounds.first_ms > request.since_ms
        ):
            first = report.stream_starts_ms
            report.stream_starts_ms = (
                bounds.first_ms if first is None else min(first, bounds.first_ms)
            )
        end_seq = bounds.last_seq + 1
        if request.state == "fresh" and not dry_run:
            reset = ReplayMark(mark.replay_id, "fresh", mark.triggers, share.orgs)
            (answer,) = await self._archive.append(
                [
                    OutboxMessage(
                        subject,
                        b"",
                        f"replay:{mark.replay_id}:reset:p{share.partition}",
                        mark_headers(reset),
                    )
                ]
            )
            if answer.error:
                raise InvalidRequest(f"the stream refused the reset marker: {answer.error}")
            share.reset_seq = end_seq = answer.seq
        if request.end_seq is not None:
            end_seq = min(end_seq, request.end_seq)
        revision = binder.catalog.revision
        orgs = set(share.orgs)
        seen: set[str] = set()
        copied: dict[str, int] = {}
        pending: list[OutboxMessage] = []
        start_ms = request.since_ms - _SLACK_MS if request.since_ms is not None else None
        stop_ms = request.until_ms + _SLACK_MS if request.until_ms is not None else None
        reading = self._archive.read(
            subject, start_ms=start_ms, start_seq=request.start_seq, end_seq=end_seq
        )
        try:
            async for chunk in reading:
                for message in chunk:
                    if message.seq >= end_seq or (
                        stop_ms is not None and message.time_ms >= stop_ms
                    ):
                        break
                    tracker = _select(message, request, orgs, binder, seen)
                    if tracker is None:
                        continue
                    seen.add(tracker)
                    share.events += 1
                    share.first_seq = share.first_seq or message.seq
                    share.last_seq = message.seq
                    if len(share.sample) < _SAMPLE:
                        share.sample.append(tracker)
                    if not dry_run:
                        pending.append(_copy(message, tracker, mark, revision))
                else:
                    if len(pending) >= _APPEND_CHUNK:
                        copied.update(await self._flush(pending, share))
                        pending = []
                    continue
                break  # past the range's end
        finally:
            close = getattr(reading, "aclose", None)
            if close is not None:
                await close()
        if pending:
            copied.update(await self._flush(pending, share))
        return copied

    async def _flush(self, copies: list[OutboxMessage], share: PartitionReplay) -> dict[str, int]:
        answers = await self._archive.append(copies)
        refused = [a.error for a in answers if a.error]
        if refused:
            raise InvalidRequest(
                f"the stream refused {len(refused)} of {len(copies)} copies, e.g. {refused[0]}"
            )
        seqs = [a.seq for a in answers]
        share.copies_first = share.copies_first or min(seqs)
        share.copies_last = max(share.copies_last, *seqs)
        return {
            copy.headers[HEADER_TRACKER]: answer.seq
            for copy, answer in zip(copies, answers, strict=True)
        }


def _superseded(
    entry: DeadLetter, replay_id: str, partition: int, copy_seq: int, now_ms: int
) -> RedriveRecord:
    return RedriveRecord(
        "dlq", entry.event_tracker_id, entry.org_id, entry.path_key, entry.stage,
        entry.stream_seq, entry.created_ms, entry.error, replay_id, f"replay:{replay_id}",
        replay_msg_id(replay_id, entry.event_tracker_id), partition, copy_seq, now_ms,
    )  # fmt: skip


def _check(request: ReplayRequest) -> None:
    if request.since_ms is None and request.start_seq is None:
        raise InvalidRequest("a replay needs the range's start: a time (since) or a sequence")
    if (
        request.since_ms is not None
        and request.until_ms is not None
        and request.until_ms <= request.since_ms
    ):
        raise InvalidRequest("the time range is empty (until is not after since)")
    if (
        request.start_seq is not None
        and request.end_seq is not None
        and request.end_seq <= request.start_seq
    ):
        raise InvalidRequest("the sequence range is empty (end is not after start)")
    if request.state not in ("keep", "fresh"):
        raise InvalidRequest(f"state must be keep or fresh, got {request.state!r}")


def _select(
    message: StoredMessage,
    request: ReplayRequest,
    orgs: set[str],
    binder: AssetBinder,
    seen: set[str],
) -> str | None:
    """The eventTrackerId of ``message`` if the replay takes it, else None: an event (not a
    replay's copy or marker) of one of ``orgs``, received in the range, not taken already."""
    headers = message.headers
    if parse_mark(headers) is not None:
        return None
    tracker = headers.get(HEADER_TRACKER) or headers.get("Nats-Msg-Id") or ""
    if not tracker or tracker in seen:
        return None
    received_text = headers.get(HEADER_RECEIVED, "")
    received = int(received_text) if received_text.isdigit() else message.time_ms
    if request.since_ms is not None and received < request.since_ms:
        return None
    if request.until_ms is not None and received >= request.until_ms:
        return None
    if _org_of(headers, message.body, binder) not in orgs:
        return None
    return tracker


def _org_of(headers: Mapping[str, str], body: bytes, binder: AssetBinder) -> str:
    """The organization an event was ingested for: the ingress's header; for messages
    without it, its asset's, else the one its body binds to, else its data source's."""
    org = headers.get(HEADER_ORG)
    if org:
        return org
    catalog = binder.catalog
    asset = catalog.assets.get(headers.get(HEADER_ASSET, ""))
    if asset is not None:
        return asset.org_id
    source = catalog.data_sources.get(headers.get(HEADER_DATA_SOURCE, ""))
    if source is None:
        return ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return source.org_id
    bound = binder.bind(source, parsed) if isinstance(parsed, dict) else None
    return bound.org_id if bound is not None and not isinstance(bound, str) else source.org_id


def _copy(message: StoredMessage, tracker: str, mark: ReplayMark, revision: int) -> OutboxMessage:
    headers = {
        name: value
        for name, value in message.headers.items()
        if not name.startswith("Nats-") and name not in (HEADER_REDRIVE, HEADER_TRACKER)
    }
    headers[HEADER_TRACKER] = tracker
    headers[HEADER_REPLAY_OF] = str(message.seq)
    if revision:  # a lane that has not reloaded the change yet catches up first
        headers[HEADER_REVISION] = str(revision)
    headers.update(mark_headers(mark))
    return OutboxMessage(
        message.subject, message.body, replay_msg_id(mark.replay_id, tracker), headers
    )
