"""The trigger dispatcher: consumes queued delivery groups and delivers them.

Groups arrive through JetStream (published by lanes before they acknowledge their batch), so a
crash here loses nothing: an unacknowledged group is redelivered. Each group is acknowledged
after its final outcome (delivered, or recorded in ``dlq``); every attempt is a row of
``logs_trigger``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import ray

from eventray.actors.lifecycle import StartOnce
from eventray.cluster.wiring import (
    Endpoints,
    catalog_from,
    make_bus,
    make_config_store,
    retention_policy,
)
from eventray.config.settings import Settings
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.nats_bus import Delivery, JetStreamBus, PartitionPuller
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.secrets import EnvSecrets
from eventray.pipeline.storage.rows import (
    RowContext,
    TriggerAttempt,
    encode_body,
    format_ts,
    trigger_rows,
)
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy

__all__ = ["TriggerActor"]

CONFIG_SUBJECT = "eventray.config"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class TriggerActor:
    def __init__(self, settings: Settings, endpoints: Endpoints, store_actor: Any) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.store = store_actor
        self._bus: JetStreamBus | None = None
        self._puller: PartitionPuller | None = None
        self._sender = TriggerSenders(
            http=AiohttpSender(limit=settings.triggers.concurrency), smtp=SmtpSender()
        )
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._log_rows: list[dict[str, Any]] = []
        self._dlq_rows: list[dict[str, Any]] = []
        self._to_ack: list[Delivery] = []
        self._once = StartOnce()
        self._stopping = False
        self.delivered = 0
        self.failed = 0
        self.attempts = 0
        self.last_error = ""

    async def start(self) -> bool:
        """Connect and start delivering (idempotent; retried after a failed start)."""
        await self._once.run(self._start)
        return True

    async def _start(self) -> None:
        nats = self.settings.nats
        bus = make_bus(self.settings, self.endpoints)
        await bus.connect()
        try:
            self._bus = bus
            self.reload()
            # Retries with backoff hold a group unacknowledged: ack_wait covers the longest
            # backoff.
            self._puller = await bus.named_puller(
                "triggers",
                nats.trigger_subject,
                ack_all=False,
                ack_wait_s=300.0,
                max_ack_pending=self.settings.triggers.concurrency * 4,
            )
            await bus.client.subscribe(CONFIG_SUBJECT, cb=self._on_config)
        except BaseException:
            await bus.close()  # the next health check starts from scratch
            self._bus = None
            raise
        self._task = asyncio.create_task(self._loop())
        self._flusher = asyncio.create_task(self._flush_loop())

    async def health(self) -> dict[str, Any]:
        await self.start()
        return await self.status()

    async def _on_config(self, msg: Any) -> None:
        self.reload()

    def reload(self) -> None:
        catalog, _ = catalog_from(make_config_store(self.endpoints))
        t = self.settings.triggers
        self._deliverer = Deliverer(
            catalog.triggers,
            self._sender,
            secrets=EnvSecrets(),
            retry=RetryPolicy(
                max_attempts=t.max_attempts,
                base_delay_s=t.backoff_base_s,
                max_delay_s=t.backoff_max_s,
            ),
            breaker=CircuitBreaker(threshold=t.circuit_failures, reset_s=t.circuit_reset_s),
        )
        self._rows = RowContext.from_catalog(
            catalog, retention_policy(self.settings), log_detail=self.settings.store.log_detail
        )

    async def _loop(self) -> None:
        assert self._puller is not None
        limit = asyncio.Semaphore(self.settings.triggers.concurrency)
        running: set[asyncio.Task[None]] = set()
        while not self._stopping:
            try:
                batch = await self._puller.fetch(self.settings.triggers.concurrency, timeout_s=0.5)
            except Exception as exc:
                self.last_error = f"fetch: {exc}"
                await asyncio.sleep(0.5)
                continue
            for delivery in batch:
                await limit.acquire()
                task = asyncio.create_task(self._deliver(delivery, limit))
                running.add(task)
                task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, delivery: Delivery, limit: asyncio.Semaphore) -> None:
        try:
            group = DeliveryGroup.from_bytes(delivery.body)
            outcome = await self._deliverer.deliver(group)
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
            self._log_rows.extend(trigger_rows(attempts, self._rows))
            self._dlq_rows.extend(
                self._dlq_row(job, f"trigger {job.trigger_id}: {reason}", delivery, now)
                for job, reason in outcome.failed
            )
            self._to_ack.append(delivery)
            self.attempts += len(outcome.attempts)
            self.delivered += sum(1 for a in outcome.attempts if a.success)
            self.failed += len(outcome.failed)
        except Exception as exc:  # not acked: JetStream redelivers it
            self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            limit.release()

    async def _flush_loop(self) -> None:
        while not self._stopping or self._to_ack:
            await asyncio.sleep(0.2)
            await self._flush()

    async def _flush(self) -> None:
        """One store call for every attempt logged since the last flush, then the acks: a
        group is acknowledged only once its log rows are stored. (One call per group made
        the single store actor the bottleneck of the whole pipeline.)"""
        if not self._to_ack:
            return
        assert self._puller is not None
        rows = {"logs_trigger": self._log_rows, "dlq": self._dlq_rows}
        acks = self._to_ack
        self._log_rows, self._dlq_rows, self._to_ack = [], [], []
        try:
            await self.store.insert_rows.remote(rows)
        except Exception as exc:  # keep them for the next flush
            self.last_error = f"store: {type(exc).__name__}: {exc}"
            self._log_rows[:0], self._dlq_rows[:0], self._to_ack[:0] = (
                rows["logs_trigger"],
                rows["dlq"],
                acks,
            )
            return
        for delivery in acks:
            await self._puller.ack(delivery)

    def _dlq_row(self, job: Any, error: str, delivery: Delivery, now: datetime) -> dict[str, Any]:
        text, encoding = encode_body(job.to_bytes())
        return {
            "created": format_ts(now),
            "org_id": job.org_id,
            "path_key": job.path_key,
            "event_tracker_id": job.event_tracker_id,
            "retention_days": self._rows.retention.days(job.org_id, "dlq"),
            "asset_id": str(job.context.get("metadata", {}).get("assetId", "")),
            "data_source_id": "",
            "stage": f"trigger:{job.trigger_id}",
            "error": error,
            "error_line": 0,
            "message": text,
            "message_encoding": encoding,
            "deliveries": delivery.delivered,
            "stream_seq": delivery.seq,
        }

    async def status(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }

    async def drain(self) -> dict[str, Any]:
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._puller is not None:
            await self._puller.stop()
        await self._sender.close()
        if self._bus is not None:
            await self._bus.close()
        return await self.status()
