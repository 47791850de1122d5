"""The trigger dispatcher: consumes queued delivery groups and delivers them.

Groups arrive through the trigger queue (published by lanes before they acknowledge their
batch), so a crash here loses nothing: an unacknowledged group is delivered again. Each group is
acknowledged after its final outcome (delivered, or recorded in ``dlq``) and after its rows are
stored; every attempt is a row of ``logs_trigger``. Rows are written in one store call per
flush, not one per group (one per group made the single store the pipeline's bottleneck).

A malformed group (not JSON, missing fields) can never be delivered: it goes to the DLQ with
stage ``trigger`` and the reason, and is acknowledged like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from eventray.pipeline.ports import Queue, QueuedMessage, RowSink
from eventray.pipeline.storage.rows import (
    Row,
    RowContext,
    TriggerAttempt,
    encode_body,
    epoch_ms,
    trigger_rows,
)
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup
from eventray.pipeline.triggers.requests import DeliveryJob

__all__ = ["TriggerDispatcher"]

log = logging.getLogger(__name__)
_LOGGED_FAILURES = 5  # failed deliveries logged per group with their ids; the rest are counted


class TriggerDispatcher:
    """Delivers the trigger queue's groups.

    Args:
        queue: the trigger queue.
        deliverer: retries, backoff and circuit breaker over the senders.
        sink: where attempts and failures are logged.
        rows: retention and paths for those rows.
        concurrency: groups in flight at once.
        flush_interval_s: how often logged rows are written (and their groups acknowledged).
    """

    def __init__(
        self,
        *,
        queue: Queue,
        deliverer: Deliverer,
        sink: RowSink,
        rows: RowContext,
        concurrency: int = 64,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.queue = queue
        self.deliverer = deliverer
        self.sink = sink
        self.rows = rows
        self.concurrency = concurrency
        self.flush_interval_s = flush_interval_s
        self.delivered = 0
        self.failed = 0
        self.attempts = 0
        self.last_error = ""
        self._log_rows: list[Row] = []
        self._dlq_rows: list[Row] = []
        self._to_ack: list[QueuedMessage] = []
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()  # deliveries in flight

    def use(self, deliverer: Deliverer, rows: RowContext) -> None:
        """Apply a new catalog's triggers."""
        self.deliverer, self.rows = deliverer, rows

    def start(self) -> None:
        self._stopping = False
        self._tasks = [asyncio.create_task(self._loop()), asyncio.create_task(self._flush_loop())]

    async def stop(self, timeout_s: float | None = None) -> int:
        """Stop fetching, finish the groups in flight, write their rows and acknowledge.

        With ``timeout_s``, what is not done by then (a webhook retrying with backoff, a store
        that does not take the rows) is abandoned unacknowledged: the queue delivers it again
        after its ack wait, so a group delivered but not yet acknowledged may be delivered
        twice. Returns how many groups were abandoned.
        """
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return 0
        _, unfinished = await asyncio.wait(tasks, timeout=timeout_s)
        if not unfinished:
            return 0
        stuck = {*unfinished, *self._running}
        abandoned = len(self._running) + len(self._to_ack)
        for task in stuck:
            task.cancel()
        await asyncio.wait(stuck, timeout=1.0)
        return abandoned

    async def _loop(self) -> None:
        limit = asyncio.Semaphore(self.concurrency)
        running = self._running
        while not self._stopping:
            try:
                batch = await self.queue.fetch(self.concurrency, timeout_s=0.5)
            except Exception as exc:
                self.last_error = f"fetch: {type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)
                continue
            for message in batch:
                await limit.acquire()
                task = asyncio.create_task(self._deliver(message, limit))
                running.add(task)
                task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, message: QueuedMessage, limit: asyncio.Semaphore) -> None:
        try:
            try:
                group = DeliveryGroup.from_bytes(message.body)
            except (ValueError, KeyError, TypeError) as exc:
                self._dlq_rows.append(
                    self._dlq_row(None, f"malformed delivery group: {exc}", message, "trigger")
                )
                self.failed += 1
                self._to_ack.append(message)
                return
            outcome = await self.deliverer.deliver(group)
            now = datetime.now(UTC)
            attempts = [
                TriggerAttempt(
                    a.job.event_tracker_id,
                    a.job.org_id,
                    a.job.business_rule_id,
                    a.job.action_id,
                    a.job.trigger_id,
                    a.attempt,
                    a.success,
                    round(a.duration_ms),
                    now,
                    a.request,
                    a.response,
                    a.error,
                )
                for a in outcome.attempts
            ]
            self._log_rows.extend(trigger_rows(attempts, self.rows))
            self._dlq_rows.extend(
                self._dlq_row(job, f"trigger {job.trigger_id}: {reason}", message)
                for job, reason in outcome.failed
            )
            self._to_ack.append(message)
            self.attempts += len(outcome.attempts)
            self.delivered += sum(1 for a in outcome.attempts if a.success)
            self.failed += len(outcome.failed)
            for job, reason in outcome.failed[:_LOGGED_FAILURES]:
                log.warning(
                    "trigger delivery failed after retries, sent to the DLQ: %s",
                    reason[:300],
                    extra={
                        "eventTrackerId": job.event_tracker_id,
                        "org": job.org_id,
                        "stage": f"trigger:{job.trigger_id}",
                    },
                )
        except Exception as exc:  # not acked: the queue delivers it again
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("trigger group not delivered, delivered again later: %r", exc)
        finally:
            limit.release()

    async def _flush_loop(self) -> None:
        while not self._stopping or self._to_ack:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the rows logged since the last flush, then acknowledge their groups."""
        if not self._to_ack:
            return
        logs, dlq, acks = self._log_rows, self._dlq_rows, self._to_ack
        self._log_rows, self._dlq_rows, self._to_ack = [], [], []
        try:
            await self.sink.write({"logs_trigger": logs, "dlq": dlq})
        except Exception as exc:  # keep them for the next flush
            self.last_error = f"store: {type(exc).__name__}: {exc}"
            log.warning("trigger rows not stored, kept for the next flush: %r", exc)
            self._log_rows[:0], self._dlq_rows[:0], self._to_ack[:0] = logs, dlq, acks
            return
        for message in acks:
            with contextlib.suppress(Exception):  # unacknowledged: delivered again, de-duplicated
                await self.queue.ack(message)

    def _dlq_row(
        self, job: DeliveryJob | None, error: str, message: QueuedMessage, stage: str = ""
    ) -> Row:
        body = job.to_bytes() if job is not None else message.body
        text, encoding = encode_body(body)
        org = job.org_id if job is not None else ""
        metadata = job.context.get("metadata", {}) if job is not None else {}
        return (
            epoch_ms(datetime.now(UTC)), org, job.path_key if job is not None else "",
            job.event_tracker_id if job is not None else f"seq-{message.seq}",
            self.rows.retention.days(org, "dlq"),
            str(metadata.get("assetId", "")) if isinstance(metadata, dict) else "", "",
            stage or (f"trigger:{job.trigger_id}" if job is not None else "trigger"), error, 0,
            text, encoding, message.delivered, message.seq,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }
