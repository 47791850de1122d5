"""A lane: the loop that carries its partitions' batches through a :class:`BatchPipeline`.

Per partition: fetch a batch (closed on size or age), run its head, then its tail; the head of
batch k+1 overlaps the tail of batch k, and tails run strictly in order, so state and acks keep
stream order. A batch is acknowledged only after its tail returned.

**No event can stop a partition.** The retry decision travels with the error
(:mod:`eventray.pipeline.errors`) and the loop honours it:

- a :class:`RetryableError` (a service is down) waits with backoff and runs the same tail
  again, in place: the partition waits, so order holds;
- :class:`EventsFailed` names the events that cannot get through (a business rule failed to
  evaluate one, its rows do not encode, its trigger payload is too large): they go to the DLQ
  with stage and reason and the rest of the batch runs the tail again without them;
- anything else (an unclassified failure, a bug) is narrowed down: the batch's tail runs again
  in halves, recursively, within a budget of attempts; a single event that still fails goes to
  the DLQ with the stage and the error, every other event is stored and acknowledged. An
  exception in the head is narrowed the same way.

Only a failure of the DLQ write itself is retried without end: an event is never dropped.

**Stopping is bounded.** :meth:`Lane.stop` with a timeout finishes what it can in that time and
then abandons the batches still in hand (a head stuck in scripts, a tail retrying a store that
is down): they are not acknowledged, so the stream delivers them again to the partition's next
owner, and processing them again is safe for the same reasons a crashed lane's batches are
(rows collapse by key, rule state has its sequence fence). It returns what it abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventray.pipeline.batch import (
    BatchPipeline,
    EventsFailed,
    StageFailed,
    mark_failed,
    split_at_controls,
)
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.latency import LatencyHistogram
from eventray.pipeline.observe import BatchObserver
from eventray.pipeline.ports import EventSource
from eventray.pipeline.processor import Failure, Ingested, ProcessedBatch, failed
from eventray.pipeline.rules.stage import RunSync, inline

__all__ = ["Abandoned", "Lane", "LaneStats"]

_CANCEL_GRACE_S = 1.0  # how long cancelled batches may take to unwind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LaneStats:
    """Counters of a lane since it started (or since :meth:`Lane.reset_stats`)."""

    events: int = 0
    failed: int = 0
    batches: int = 0
    retries: int = 0
    narrowed: int = 0
    last_error: str = ""
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    by_partition: dict[int, int] = field(default_factory=dict)
    """Events handled per partition (the balancer's measure of load)."""
    by_source_ms: dict[str, LatencyHistogram] = field(default_factory=dict)
    """Recent latencies per data source: which tenant waits, when one floods."""
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A batch a lane stopped without finishing: unacknowledged, so the stream delivers it
    again to the partition's next owner.

    Attributes:
        partition: the batch's partition.
        events: how many events it holds.
        first_seq, last_seq: their stream sequences (0 outside a stream).
        stage: where it was: ``head`` (binding, scripts, routing) or ``tail`` (rules, store,
            outbox, commit; or waiting for the batch before it).
    """

    partition: int
    events: int
    first_seq: int
    last_seq: int
    stage: str


@dataclass(slots=True, eq=False)
class _InHand:
    """A batch between its fetch and its acknowledgement."""

    partition: int
    items: Sequence[Ingested]
    stage: str = "head"

    def abandoned(self) -> Abandoned:
        seqs = [item.seq for item in self.items if item.seq is not None] or [0]
        return Abandoned(self.partition, len(self.items), min(seqs), max(seqs), self.stage)


@dataclass(slots=True)
class _Budget:
    """How many extra tail runs one batch may spend finding the events that fail it."""

    left: int


class Lane:
    """Runs one loop per partition over ``sources``.

    Args:
        pipeline: the batch's work.
        sources: one event source per owned partition.
        batch_size: most events per batch.
        linger_s: a batch closes when no new event arrived for this long after its first.
        fetch_timeout_s: how long one fetch waits for a first event.
        run_sync: where the head's blocking work runs (a lane actor's worker thread).
        narrow_budget: extra tail runs a batch may spend narrowing a failure down.
        retry_initial_s, retry_max_s: backoff of in-place retries.
        catch_up: called with the config revision a batch's events were accepted under when it
            is newer than the pipeline's catalog, before the batch is processed; returns once
            the pipeline runs that revision or a newer one (the lane actor reloads).
        observer: told about each acknowledged batch (the lane actor's Ray metrics).
    """

    def __init__(
        self,
        pipeline: BatchPipeline,
        sources: Mapping[int, EventSource],
        *,
        batch_size: int = 1000,
        linger_s: float = 0.005,
        fetch_timeout_s: float = 0.5,
        run_sync: RunSync = inline,
        narrow_budget: int = 64,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        catch_up: Callable[[int], Awaitable[None]] | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.observer = observer
        self.sources = dict(sources)
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.fetch_timeout_s = fetch_timeout_s
        self.run_sync = run_sync
        self.narrow_budget = narrow_budget
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.catch_up = catch_up
        self._asked = 0  # the newest revision catch_up was asked for
        self.stats = LaneStats()
        self._stopping = False
        self._released: set[int] = set()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._tails: set[asyncio.Task[None]] = set()
        self._in_hand: list[_InHand] = []
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        """Whether the partition loops run (between :meth:`start` and :meth:`stop`); a lane
        that owns no partition yet (the scaling just added it) runs too: a partition it
        acquires starts pulling at once."""
        return self._started

    def start(self) -> None:
        """Start one loop per partition on the running event loop."""
        self._stopping = False
        self._started = True
        for partition, source in self.sources.items():
            if partition not in self._tasks:
                self._tasks[partition] = asyncio.create_task(self._loop(source))

    async def stop(self, timeout_s: float | None = None) -> list[Abandoned]:
        """Stop fetching and finish the batches in hand (they are acknowledged).

        With ``timeout_s``, batches not finished by then are abandoned, unacknowledged (see
        the module docstring), and returned; the stop then takes at most ``timeout_s`` plus
        about a second. Blocking work of an abandoned head may still be running on its thread
        (the caller decides what to do with it: a lane actor kills its script host).
        """
        self._stopping = True
        self._started = False
        tasks = list(self._tasks.values())
        self._tasks = {}
        if not tasks:
            return []
        _, unfinished = await asyncio.wait(tasks, timeout=timeout_s)
        if unfinished:
            stuck = unfinished | self._tails
            for task in stuck:
                task.cancel()
            await asyncio.wait(stuck, timeout=_CANCEL_GRACE_S)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("lane loop ended with an error", exc_info=task.exception())
        abandoned = [hand.abandoned() for hand in self._in_hand]
        self._in_hand = []
        return abandoned

    async def release(self, partition: int) -> EventSource | None:
        """Give ``partition`` up: stop fetching it, finish and acknowledge its batches in hand,
        and return its source (the caller closes it) so another lane can own it; nothing of
        it stays unacknowledged here."""
        source = self.sources.pop(partition, None)
        task = self._tasks.pop(partition, None)
        if task is not None:
            self._released.add(partition)
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                self._released.discard(partition)
        return source

    def acquire(self, partition: int, source: EventSource) -> None:
        """Own ``partition`` from now on (its loop starts if the lane is running)."""
        self.sources[partition] = source
        if self._started and not self._stopping:
            self._tasks[partition] = asyncio.create_task(self._loop(source))

    async def run_until(self, events: int, *, timeout_s: float = 300.0) -> None:
        """Run until ``events`` events were handled (stored or sent to the DLQ), then stop:
        bounded runs for the benchmarks and single-process tools."""
        self.start()
        deadline = time.monotonic() + timeout_s
        try:
            while self.stats.events + self.stats.failed < events:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"only {self.stats.events + self.stats.failed} of {events} events handled"
                    )
                await asyncio.sleep(0.01)
        finally:
            await self.stop()

    def reset_stats(self) -> None:
        self.stats = LaneStats()

    # ------------------------------------------------------------------ the loop
    async def _loop(self, source: EventSource) -> None:
        tail: asyncio.Task[None] | None = None
        while not self._stopping and source.partition not in self._released:
            try:
                items = await source.fetch(
                    self.batch_size, timeout_s=self.fetch_timeout_s, linger_s=self.linger_s
                )
            except Exception as exc:  # the stream is unreachable: wait and pull again
                self.stats.last_error = f"p{source.partition} fetch: {type(exc).__name__}: {exc}"
                log.warning(
                    "fetch failed, pulling again in 0.5 s: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"partition": source.partition},
                )
                await asyncio.sleep(0.5)
                continue
            if not items:
                continue
            # A replay's reset marker gets a batch of its own, so it applies in stream order.
            hands = [_InHand(source.partition, part) for part in split_at_controls(items)]
            self._in_hand.extend(hands)
            newest = max(item.revision for item in items)
            if newest > self._asked and newest > self.pipeline.catalog.revision:
                await self._catch_up(newest)
            for hand in hands:
                processed = await self.run_sync(self._head, hand.items)
                hand.stage = "tail"
                if tail is not None:
                    await tail
                tail = asyncio.create_task(self._settle_batch(source, hand, processed))
                self._tails.add(tail)
                tail.add_done_callback(self._tails.discard)
        if tail is not None:
            await tail

    async def _catch_up(self, revision: int) -> None:
        """Ask once per revision: a revision the config store never reaches (a stream kept
        across a reset store) must not cost a reload per batch. If catching up fails, the
        batch runs on the catalog in use, as it would have without the revision."""
        self._asked = revision
        if self.catch_up is None:
            return
        try:
            await self.catch_up(revision)
        except Exception as exc:
            self.stats.last_error = (
                f"catching up with config revision {revision}: {type(exc).__name__}: {exc}"
            )

    def _head(self, items: Sequence[Ingested]) -> ProcessedBatch:
        try:
            return self.pipeline.head(items)
        except Exception as exc:
            self.stats.narrowed += 1
            self.stats.last_error = f"head: {type(exc).__name__}: {exc}"
            return self._head_narrowed(items, _Budget(self.narrow_budget))

    def _head_narrowed(self, items: Sequence[Ingested], budget: _Budget) -> ProcessedBatch:
        """The head in halves until the events that make it raise stand alone."""
        if len(items) == 1 or budget.left <= 0:
            out = ProcessedBatch()
            for item in items:
                try:
                    one = self.pipeline.head([item])
                except Exception as exc:
                    out.failures.append(failed(item, "process", f"{type(exc).__name__}: {exc}"))
                else:
                    _extend(out, one)
            return out
        budget.left -= 1
        middle = len(items) // 2
        out = ProcessedBatch()
        for half in (items[:middle], items[middle:]):
            try:
                _extend(out, self.pipeline.head(half))
            except Exception:
                _extend(out, self._head_narrowed(half, budget))
        return out

    async def _settle_batch(
        self, source: EventSource, hand: _InHand, processed: ProcessedBatch
    ) -> None:
        try:
            await self._settle(source, hand.items, processed, _Budget(self.narrow_budget))
        except asyncio.CancelledError:
            raise  # abandoned by a bounded stop: still in hand
        except Exception as exc:  # a bug in the loop itself: never let it end the partition
            log.exception("lane p%s: settling a batch failed", source.partition)
            self.stats.last_error = f"p{source.partition} settle: {type(exc).__name__}: {exc}"
        with contextlib.suppress(ValueError):
            self._in_hand.remove(hand)

    async def _settle(
        self,
        source: EventSource,
        items: Sequence[Ingested],
        processed: ProcessedBatch,
        budget: _Budget,
    ) -> None:
        """Run the tail of ``items`` until it succeeds, then acknowledge them (see the module
        docstring for how each kind of failure is handled)."""
        partition = source.partition
        delay = self.retry_initial_s
        while True:
            try:
                await self.pipeline.tail(partition, items, processed)
                await source.ack_through(items[-1])
            except EventsFailed as exc:
                mark_failed(processed, exc.failures)
                continue  # each round removes at least one event: this ends
            except RetryableError as exc:
                delay = await self._backoff(partition, exc, delay)
                continue
            except StageFailed as exc:
                undecided = _undecided(items, processed)
                if not undecided:
                    # Only DLQ rows are left and even they cannot be written: keep trying,
                    # an event is never dropped.
                    delay = await self._backoff(partition, exc, delay)
                    continue
                self.stats.narrowed += 1
                self.stats.last_error = f"p{partition} {exc}"
                log.warning(
                    "batch of %d events failed at stage %s, narrowing it down: %s",
                    len(items),
                    exc.stage,
                    exc,
                    extra={"partition": partition, "stage": exc.stage},
                )
                if len(undecided) == 1 or budget.left <= 0:
                    reason = str(exc) if budget.left > 0 else f"{exc} (not isolated further)"
                    mark_failed(processed, dict.fromkeys(undecided, (exc.stage, reason)))
                    continue
                budget.left -= 1
                middle = len(items) // 2
                for half in (items[:middle], items[middle:]):
                    ids = [item.event_tracker_id for item in half]
                    await self._settle(source, half, processed.subset(ids), budget)
                return
            self._done(partition, items, processed)
            return

    async def _backoff(self, partition: int, exc: Exception, delay: float) -> float:
        self.stats.retries += 1
        self.stats.last_error = f"p{partition}: {type(exc).__name__}: {exc}"
        # One line per retry: the backoff doubles to retry_max_s, so an outage logs a few
        # lines a second at first and then one every couple of seconds per partition.
        log.warning(
            "batch tail retried in place after %.2f s: %s: %s",
            delay,
            type(exc).__name__,
            exc,
            extra={"partition": partition, "stage": getattr(exc, "stage", "")},
        )
        hint = getattr(exc, "retry_after_s", None)
        await asyncio.sleep(hint if isinstance(hint, (int, float)) and hint > 0 else delay)
        return min(delay * 2, self.retry_max_s)

    def _done(self, partition: int, items: Sequence[Ingested], processed: ProcessedBatch) -> None:
        stats = self.stats
        stats.batches += 1
        stats.events += len(processed.events)
        stats.failed += len(processed.failures)
        stats.by_partition[partition] = stats.by_partition.get(partition, 0) + len(items)
        now_ms = time.time() * 1000
        latencies = stats.latencies_ms
        by_source = stats.by_source_ms
        batch_ms: list[float] = []
        for item in items:
            if item.received_ms and not item.copy:  # a copy's received time is its event's
                latency = now_ms - item.received_ms
                latencies.append(latency)
                batch_ms.append(latency)
                mine = by_source.get(item.data_source_id)
                if mine is None:
                    mine = by_source[item.data_source_id] = LatencyHistogram()
                mine.add(latency)
        if processed.failures:
            _log_failures(partition, processed.failures)
        if self.observer is not None:
            by_stage: dict[str, int] = {}
            for failure in processed.failures:
                by_stage[failure.stage] = by_stage.get(failure.stage, 0) + 1
            self.observer.batch_done(partition, len(processed.events), by_stage, batch_ms)

    # ------------------------------------------------------------------ observability
    async def status(self) -> dict[str, Any]:
        lag: dict[int, int] = {}
        for partition, source in self.sources.items():
            with contextlib.suppress(Exception):
                lag[partition] = await source.pending()
        latencies = sorted(self.stats.latencies_ms)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(len(latencies) * q))] if latencies else 0.0

        return {
            "partitions": sorted(self.sources),
            "events": self.stats.events,
            "failed": self.stats.failed,
            "batches": self.stats.batches,
            "retries": self.stats.retries,
            "narrowed": self.stats.narrowed,
            "lag": lag,
            "stage_s": {k: round(v, 4) for k, v in self.pipeline.stage_s.items()},
            "latency_p50_ms": pct(0.5),
            "latency_p99_ms": pct(0.99),
            "events_by_partition": dict(self.stats.by_partition),
            "latency_by_source": {
                source: histogram.summary() for source, histogram in self.stats.by_source_ms.items()
            },
            "last_error": self.stats.last_error,
            "uptime_s": time.monotonic() - self.stats.started,
        }


_LOGGED_FAILURES = 5  # DLQ lines per batch with the event's ids; the rest are counted


def _log_failures(partition: int, failures: Sequence[Failure]) -> None:
    """One warning per event sent to the DLQ, with its ids, for the first few of a batch: a
    template that breaks fails every event, and a line per event would flood the logs."""
    for failure in failures[:_LOGGED_FAILURES]:
        log.warning(
            "event sent to the DLQ at stage %s: %s",
            failure.stage,
            failure.error[:300],
            extra={
                "eventTrackerId": failure.event_tracker_id,
                "org": failure.org_id,
                "stage": failure.stage,
                "partition": partition,
            },
        )
    if len(failures) > _LOGGED_FAILURES:
        log.warning(
            "%d more events of this batch sent to the DLQ",
            len(failures) - _LOGGED_FAILURES,
            extra={"partition": partition},
        )


def _extend(out: ProcessedBatch, part: ProcessedBatch) -> None:
    out.events.extend(part.events)
    out.failures.extend(part.failures)
    out.rule_inputs.extend(part.rule_inputs)


def _undecided(items: Sequence[Ingested], processed: ProcessedBatch) -> list[str]:
    """Events of ``items`` not yet known to fail (narrowing only ever blames these)."""
    failing = {f.event_tracker_id for f in processed.failures}
    return [item.event_tracker_id for item in items if item.event_tracker_id not in failing]
