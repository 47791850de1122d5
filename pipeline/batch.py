"""One batch end to end: the work a lane does, as one object over ports.

``head`` (bind -> scripts -> route -> EVA) is pure CPU. ``tail`` carries the processed batch
to durability, in this order: rules (evaluated against committed state, writes pending) ->
outputs (trigger deliveries and ``publish`` routes, encoded) -> rows -> the row sink (stored)
-> the outbox (queued) -> the rules' commit with the batch's stream sequence as fence. The
caller acknowledges the batch after ``tail`` returns; a crash anywhere before that loses
nothing (the stream delivers again, stored rows collapse by key, the fence refuses a replayed
batch's state, queued deliveries are de-duplicated by id).

The lane actor, the single-process baseline, ``eventray demo --local`` and the benchmarks all
run this object; :mod:`eventray.pipeline.lane` adds the loop, the retries and the narrowing of
failures to the events that cause them.

**Replays.** A replay's copies (:mod:`eventray.pipeline.replay`) are events like any other,
except: with ``state: keep`` their rules are not evaluated (state, rule logs and rule
deliveries stay as the first run left them); without ``triggers`` their trigger deliveries
and ``publish`` routes are not sent (with it, their deliveries carry the replay's id in their
de-duplication id, so the stream does not drop them as repeats of the first run's); a reset
marker is not an event: its tail resets the rule state of its organizations, under the fence
(:func:`split_at_controls` gives it a batch of its own).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.observe import BatchObserver
from eventray.pipeline.ports import Clock, Outbox, OutboxMessage, RowSink
from eventray.pipeline.processor import (
    EventProcessor,
    Failure,
    Ingested,
    ProcessedBatch,
)
from eventray.pipeline.processor import failed as failure_of
from eventray.pipeline.replay_marks import ReplayMark
from eventray.pipeline.rules.outcome import BatchOutcome
from eventray.pipeline.rules.stage import RuleStage
from eventray.pipeline.scripts.executor import ScriptExecutor
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, batch_rows
from eventray.pipeline.triggers.delivery import DeliveryGroup
from eventray.pipeline.triggers.requests import DeliveryJob

__all__ = [
    "BatchPipeline",
    "EventsFailed",
    "StageFailed",
    "TailOutputs",
    "delivery_groups",
    "mark_failed",
    "rule_failures",
    "split_at_controls",
]


class EventsFailed(PermanentError):
    """Some events of a batch cannot get through the tail (a business rule failed to evaluate
    them, their rows do not encode, their trigger payload is larger than the stream takes):
    they go to the DLQ and the rest of the batch runs the tail again without them.

    Args:
        failures: ``{eventTrackerId: (stage, reason)}``.
    """

    def __init__(self, failures: Mapping[str, tuple[str, str]]) -> None:
        self.failures = dict(failures)
        first = next(iter(self.failures.items()))
        super().__init__(f"{len(self.failures)} event(s) failed, e.g. {first[0]}: {first[1][1]}")


class StageFailed(PermanentError):
    """A tail step failed for a reason nobody classified (a bug, a refused insert): the lane
    narrows it down to the events that cause it.

    Args:
        stage: the tail step (rules, outputs, rows, store, outbox, commit).
        cause: what it raised.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {type(cause).__name__}: {cause}")
        self.stage = stage


def mark_failed(processed: ProcessedBatch, failures: Mapping[str, tuple[str, str]]) -> None:
    """Move the events named in ``failures`` from ``processed.events`` to its failures (their
    rule inputs go too: the tail evaluates the rules again without them)."""
    events = []
    for event in processed.events:
        found = failures.get(event.event_tracker_id)
        if found is None:
            events.append(event)
            continue
        stage, reason = found
        processed.failures.append(
            Failure(
                event.event_tracker_id,
                stage,
                reason,
                event.body,
                event.org_id,
                event.asset.id,
                None,
                event.seq,
            )
        )
    processed.events = events
    processed.rule_inputs = [r for r in processed.rule_inputs if r.event_tracker_id not in failures]
    processed.rules = BatchOutcome()


def rule_failures(outcome: BatchOutcome) -> dict[str, tuple[str, str]]:
    """``{eventTrackerId: ("rules", reason)}`` for each event a business rule failed to
    evaluate (a pattern from the event that RE2 refuses, an action on a value of the wrong
    type...): the event goes to the DLQ naming the business rule and the error, and the batch
    is evaluated again without it, so nothing of it stands (other rules' state changes and
    deliveries included) and it can be replayed whole once fixed."""
    failed: dict[str, tuple[str, str]] = {}
    for evaluation in outcome.evaluations:
        if evaluation.error is None:
            continue
        reason = (
            f"business rule {evaluation.business_rule_id!r} (rule {evaluation.rule_id!r}): "
            f"{evaluation.error}"
        )
        found = failed.get(evaluation.event_tracker_id)
        failed[evaluation.event_tracker_id] = (
            "rules",
            reason if found is None else f"{found[1]}; {reason}",
        )
    return failed


def split_at_controls(items: Sequence[Ingested]) -> list[Sequence[Ingested]]:
    """``items`` as batches in which a replay's reset marker stands alone, in stream order:
    the events before it are evaluated on the state before the reset, those after on the
    reset state."""
    if not any(item.replay is not None and item.replay.control for item in items):
        return [items]
    parts: list[Sequence[Ingested]] = []
    current: list[Ingested] = []
    for item in items:
        if item.replay is not None and item.replay.control:
            if current:
                parts.append(current)
                current = []
            parts.append([item])
        else:
            current.append(item)
    if current:
        parts.append(current)
    return parts


def _marks(items: Sequence[Ingested]) -> dict[str, ReplayMark]:
    return {item.event_tracker_id: item.replay for item in items if item.replay is not None}


def delivery_groups(batch: ProcessedBatch) -> list[tuple[str, DeliveryGroup]]:
    """``(eventTrackerId, group)``: exec actions of each rule evaluation (one group each) and
    each trigger route (one group each)."""
    groups: list[tuple[str, DeliveryGroup]] = []
    for evaluation in batch.rules.evaluations:
        if not evaluation.execs:
            continue
        jobs = tuple(
            DeliveryJob(
                evaluation.event_tracker_id,
                evaluation.org_id,
                evaluation.path_key,
                x.trigger_id,
                x.message,
                x.context,
                x.business_rule_id,
                x.action_id,
                x.mode,
                x.on_error,
            )
            for x in evaluation.execs
        )
        groups.append(
            (evaluation.event_tracker_id, DeliveryGroup(jobs, jobs[0].mode, jobs[0].on_error))
        )
    for event in batch.events:
        for dispatch in event.routing.dispatches:
            if dispatch.kind == "trigger" and dispatch.target:
                view = event.view
                context = {"event": view, "metadata": view["metadata"], "state": {}, "params": {}}
                job = DeliveryJob(
                    event.event_tracker_id, event.org_id, event.path_key, dispatch.target, None,
                    context,
                )  # fmt: skip
                groups.append((event.event_tracker_id, DeliveryGroup((job,))))
    return groups


@dataclass(slots=True)
class TailOutputs:
    """What one tail sends on: rows per table and the outbox's messages."""

    rows: dict[str, list[tuple[Any, ...]]]
    queued: list[OutboxMessage] = field(default_factory=list)
    published: list[OutboxMessage] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


class BatchPipeline:
    """Head and tail of a batch against one catalog (swap it with :meth:`use`).

    Args:
        catalog: the entities.
        executor: runs template scripts (its cache stays warm across catalogs).
        rules: the rules step (in this process, or rule-partition actors).
        sink: where rows go (the store actor, or a store in this process).
        outbox: where trigger deliveries and ``publish`` routes go.
        clock: stamps rows whose ingestion time is unknown.
        retention: days per table and organization.
        log_detail: ``errors`` or ``all`` (see :class:`RowContext`).
        trigger_subject: the trigger queue's subject.
        observer: told each stage's time per batch (the lane actor's Ray metrics).
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        executor: ScriptExecutor,
        rules: RuleStage,
        sink: RowSink,
        outbox: Outbox,
        clock: Clock,
        retention: RetentionPolicy | None = None,
        log_detail: str = "errors",
        trigger_subject: str = "eventray.triggers",
        observer: BatchObserver | None = None,
    ) -> None:
        self.executor = executor
        self.observer = observer
        self.rules = rules
        self.sink = sink
        self.outbox = outbox
        self.clock = clock
        self.retention = retention or RetentionPolicy()
        self.log_detail = log_detail
        self.trigger_subject = trigger_subject
        self.stage_s: dict[str, float] = dict.fromkeys(
            ("head", "rules", "rows", "store", "outbox", "commit"), 0.0
        )
        self.use(catalog)

    def use(self, catalog: Catalog) -> None:
        """Apply a new catalog to the next batch (``eventray apply``); warm scripts stay warm."""
        self.catalog = catalog
        self.processor = EventProcessor(catalog, self.executor, None)
        self.row_context = RowContext.from_catalog(
            catalog, self.retention, log_detail=self.log_detail
        )
        self.rules.use(catalog)

    # ------------------------------------------------------------------ head
    def head(self, items: Sequence[Ingested]) -> ProcessedBatch:
        """bind -> scripts -> route -> EVA for a batch; every event ends as processed or as a
        failure. Blocking CPU work: a lane runs it on its worker thread."""
        started = time.perf_counter()
        try:
            marks = _marks(items)
            if not marks:
                return self.processor.process(items)
            processed = self.processor.process(
                [item for item in items if item.replay is None or not item.replay.control]
            )
            keep = {tracker for tracker, mark in marks.items() if not mark.evaluates_rules}
            if keep:  # a replay that keeps the state: its rules are not evaluated again
                processed.rule_inputs = [
                    r for r in processed.rule_inputs if r.event_tracker_id not in keep
                ]
            return processed
        finally:
            seconds = time.perf_counter() - started
            self.stage_s["head"] += seconds
            if self.observer is not None:
                self.observer.stage_done("head", len(items), seconds)

    # ------------------------------------------------------------------ tail
    async def tail(self, partition: int, items: Sequence[Ingested], batch: ProcessedBatch) -> None:
        """Carry ``batch`` (the head's result for ``items``) to durability; the caller then
        acknowledges ``items[-1]``.

        Raises:
            RetryableError: a service is unavailable: run the same tail again later.
            EventsFailed: these events cannot get through (mark them failed, run again).
            StageFailed: an unclassified failure (narrow it down).
        """
        stage = "rules"
        clock = time.perf_counter
        t0 = clock()
        try:
            for item in items:
                if item.replay is not None and item.replay.control and item.seq is not None:
                    await self._reset(partition, item, batch)
            batch.rules = (
                await self.rules.evaluate(partition, batch.rule_inputs)
                if batch.rule_inputs
                else BatchOutcome()
            )
            failed = rule_failures(batch.rules)
            if failed:  # as the events that do not encode: out to the DLQ, the rest again
                raise EventsFailed(failed)
            t1 = clock()
            stage = "rows"
            outputs = self.outputs(batch, items, self.clock.now())
            t2 = clock()
            stage = "store"
            if outputs.row_count:
                await self.sink.write(outputs.rows)
            t3 = clock()
            stage = "outbox"
            if outputs.queued:
                await self.outbox.enqueue(outputs.queued)
            if outputs.published:
                await self.outbox.publish(outputs.published)
            t4 = clock()
            stage = "commit"
            if batch.rule_inputs:
                status = await self.rules.commit(partition, batch.rules.seq)
                if status == "no-pending":
                    raise _RulesRestarted(partition)
        except (RetryableError, EventsFailed):
            raise
        except Exception as exc:
            raise StageFailed(stage, exc) from exc
        t5 = clock()
        stage_s = self.stage_s
        stage_s["rules"] += t1 - t0
        stage_s["rows"] += t2 - t1
        stage_s["store"] += t3 - t2
        stage_s["outbox"] += t4 - t3
        stage_s["commit"] += t5 - t4
        observer = self.observer
        if observer is not None:
            events = len(batch.events)
            for name, seconds in (
                ("rules", t1 - t0),
                ("rows", t2 - t1),
                ("store", t3 - t2),
                ("outbox", t4 - t3),
                ("commit", t5 - t4),
            ):
                observer.stage_done(name, events, seconds)

    async def _reset(self, partition: int, item: Ingested, batch: ProcessedBatch) -> None:
        """A replay's reset marker. A failure nobody classified puts the marker in the DLQ
        (stage ``replay:reset``), where the replay's operator sees it; it is not retried."""
        assert item.replay is not None and item.seq is not None
        try:
            await self.rules.reset(partition, item.replay.reset_orgs, item.seq)
        except RetryableError:
            raise
        except Exception as exc:
            if all(f.event_tracker_id != item.event_tracker_id for f in batch.failures):
                reason = f"resetting the rule state failed: {type(exc).__name__}: {exc}"
                batch.failures.append(failure_of(item, "replay:reset", reason))

    def outputs(
        self, batch: ProcessedBatch, items: Sequence[Ingested], now: datetime
    ) -> TailOutputs:
        """Rows and outbox messages of an evaluated batch.

        Raises:
            EventsFailed: events whose rows do not encode or whose trigger payload exceeds
                the outbox's limit (nothing else of the batch is lost: it runs again).
        """
        failed: dict[str, tuple[str, str]] = {}
        queued: list[OutboxMessage] = []
        limit = self.outbox.max_payload
        marks = _marks(items)
        for tracker, group in delivery_groups(batch):
            mark = marks.get(tracker)
            if mark is not None and not mark.triggers:
                continue  # a replay sends nothing again unless asked
            try:
                body = group.to_bytes()
            except (TypeError, ValueError) as exc:
                failed[tracker] = ("outbox", f"trigger payload does not encode: {exc}")
                continue
            if len(body) > limit:
                failed[tracker] = (
                    "outbox",
                    f"trigger payload of {len(body):,} bytes exceeds the stream's limit of "
                    f"{limit:,} bytes (trigger {group.jobs[0].trigger_id})",
                )
                continue
            dedup = group.dedup_id()
            if mark is not None:  # not a repeat of the first run's delivery: a new one
                dedup = f"replay:{mark.replay_id}:{dedup}"
            queued.append(OutboxMessage(self.trigger_subject, body, dedup))
        published: list[OutboxMessage] = []
        for event in batch.events:
            mark = marks.get(event.event_tracker_id)
            if mark is not None and not mark.triggers:
                continue
            for dispatch in event.routing.dispatches:
                if dispatch.kind != "publish" or not dispatch.target:
                    continue
                try:
                    body = orjson.dumps(
                        {
                            "eventTrackerId": event.event_tracker_id,
                            "orgId": event.org_id,
                            "assetId": event.asset.id,
                            "event": event.event,
                        }
                    )
                except TypeError as exc:
                    failed[event.event_tracker_id] = ("outbox", f"event does not encode: {exc}")
                    continue
                if len(body) > limit:
                    failed[event.event_tracker_id] = (
                        "outbox",
                        f"published event of {len(body):,} bytes exceeds the stream's limit "
                        f"of {limit:,} bytes (subject {dispatch.target})",
                    )
                    continue
                published.append(OutboxMessage(dispatch.target, body))
        rows, row_errors = _rows(batch, self.row_context, now, items)
        failed.update(row_errors)
        if failed:
            raise EventsFailed(failed)
        return TailOutputs(rows, queued, published)


class _RulesRestarted(RetryableError):
    """The rule partition lost its pending batch (its actor restarted): evaluate again."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"rule partition p{partition} restarted before commit; re-evaluating")


def _rows(
    batch: ProcessedBatch, context: RowContext, now: datetime, items: Sequence[Ingested]
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, tuple[str, str]]]:
    """The batch's rows, or the events whose rows cannot be built (a value no column takes).

    The whole batch is built at once; only when that raises is it rebuilt event by event to
    find the culprits, so the common case pays nothing for the isolation.
    """
    try:
        return batch_rows(batch, context, now=now, ingested=items), {}
    except Exception:
        pass
    failed: dict[str, tuple[str, str]] = {}
    trackers = [e.event_tracker_id for e in batch.events] + [
        f.event_tracker_id for f in batch.failures
    ]
    for tracker in trackers:
        try:
            batch_rows(batch.subset([tracker], with_rules=True), context, now=now, ingested=items)
        except Exception as exc:
            failed[tracker] = ("rows", f"row does not encode: {type(exc).__name__}: {exc}")
    if not failed:  # the batch fails as a whole but no event alone: let the lane narrow it
        raise RuntimeError("rows of the batch do not encode, though each event's do")
    return {}, failed
