"""A lane: pulls its partitions' batches from JetStream and carries each batch to durability.

Per batch, in order: bind + QuickJS + route + EVA (on the lane's script thread; QuickJS itself
runs in the lane's script host, a child process), rules (the partition's RulePartition in this
lane by default, or its rule actor: evaluate, state kept pending), rows to the store actor,
trigger deliveries and ``publish`` routes to the stream, then the rule commit with the batch's
stream sequence, then one AckAll for the batch. A batch that fails anywhere is retried in place
with backoff (the partition waits: order matters); if the lane itself dies, its restarted
successor rewinds each partition's consumer to the acknowledged floor (see
``JetStreamBus.puller``) and everything unacknowledged is processed again.

Lanes *are* the script-executor pool: each holds warm compiled templates in its script host,
and more lanes (a setting) is more executors. Why the host is a child process and not a Ray
actor of its own: it needs no scheduling or naming, only crash containment (QuickJS can segfault
on out-of-memory) and a core of its own, and a pipe is cheaper than an actor call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
import ray

from eventray.actors.lifecycle import StartOnce
from eventray.cluster.wiring import (
    Endpoints,
    catalog_from,
    make_blob_store,
    make_bus,
    make_config_store,
    make_state_store,
    retention_policy,
)
from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_bus import Delivery, JetStreamBus, PartitionPuller
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.ingress import HEADER_RECEIVED, HEADER_SOURCE
from eventray.pipeline.processor import EventProcessor, Ingested, ProcessedBatch
from eventray.pipeline.rules.outcome import BatchOutcome
from eventray.pipeline.rules.partition import RulePartition
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import TemplateExecutor
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.storage.rows import RowContext, batch_rows, json_each_row
from eventray.pipeline.triggers.delivery import DeliveryGroup
from eventray.pipeline.triggers.requests import DeliveryJob

__all__ = ["LaneActor", "delivery_groups"]

CONFIG_SUBJECT = "eventray.config"


def delivery_groups(batch: ProcessedBatch) -> list[DeliveryGroup]:
    """Exec actions of rule evaluations (one group each) and trigger routes (one each)."""
    groups: list[DeliveryGroup] = []
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
        groups.append(DeliveryGroup(jobs, jobs[0].mode, jobs[0].on_error))
    for event in batch.events:
        for dispatch in event.routing.dispatches:
            if dispatch.kind == "trigger" and dispatch.target:
                view = event.view
                context = {"event": view, "metadata": view["metadata"], "state": {}, "params": {}}
                job = DeliveryJob(
                    event.event_tracker_id,
                    event.org_id,
                    event.path_key,
                    dispatch.target,
                    None,
                    context,
                )
                groups.append(DeliveryGroup((job,)))
    return groups


class _Stats:
    def __init__(self) -> None:
        self.events = 0
        self.failed = 0
        self.batches = 0
        self.retries = 0
        self.stage_s: dict[str, float] = {
            "scripts": 0.0,
            "rules": 0.0,
            "store": 0.0,
            "triggers": 0.0,
            "commit": 0.0,
            "ack": 0.0,
        }
        self.latencies_ms: deque[float] = deque(maxlen=20_000)
        self.last_error = ""
        self.started = time.monotonic()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class LaneActor:
    """Owns some partitions: one puller loop per partition, one script thread for all."""

    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints,
        partitions: list[int],
        rule_actors: dict[int, Any],
        store_actor: Any,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.partitions = partitions
        self.rule_actors = rule_actors
        self.store = store_actor
        # Every QuickJS context of this lane is created and used on this one thread.
        self._scripts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quickjs")
        self._processor: EventProcessor | None = None
        self._host: ScriptHost | None = None
        self._local_rules: dict[int, RulePartition] = {}
        self._rows: RowContext | None = None
        self._bus: JetStreamBus | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pullers: list[PartitionPuller] = []
        self._stopping = False
        self._once = StartOnce()
        self.revision = -1
        self.stats = _Stats()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> bool:
        """Connect, load the catalog and start pulling (idempotent; called again after a
        restart by the supervisor's health check, and again after a failed start)."""
        await self._once.run(self._start)
        return True

    async def _start(self) -> None:
        nats = self.settings.nats
        bus = make_bus(self.settings, self.endpoints)
        await bus.connect()
        try:
            self._bus = bus
            await self.reload()
            pullers = [
                await bus.puller(
                    partition, ack_wait_s=nats.ack_wait_s, max_ack_pending=nats.max_ack_pending
                )
                for partition in self.partitions
            ]
            await bus.client.subscribe(CONFIG_SUBJECT, cb=self._on_config)
        except BaseException:
            await bus.close()  # the next health check starts from scratch
            self._bus = None
            raise
        for partition, puller in zip(self.partitions, pullers, strict=True):
            self._pullers.append(puller)
            self._tasks.append(asyncio.create_task(self._loop(partition, puller)))

    async def health(self) -> dict[str, Any]:
        await self.start()
        return {"partitions": self.partitions, "revision": self.revision}

    async def _on_config(self, msg: Any) -> None:
        await self.reload()
        await asyncio.gather(
            *(self.rule_actors[p].reload.remote() for p in self.partitions if p in self.rule_actors)
        )

    async def reload(self) -> int:
        """Rebuild the processor from the config store; warm templates stay warm."""
        loop = asyncio.get_running_loop()
        self.revision = await loop.run_in_executor(self._scripts, self._build)
        return self.revision

    def _build(self) -> int:  # runs on the script thread
        catalog, revision = catalog_from(make_config_store(self.endpoints))
        scripts = self.settings.scripts
        if self._processor is not None:
            cache = self._processor.executor.cache
        else:
            if scripts.isolate:
                self._host = ScriptHost(scripts.limits())
                self._host.start()
            cache = ScriptCache(
                capacity=scripts.cache_capacity,
                l1_dir=self.settings.script_cache_dir,
                l2=make_blob_store(self.settings, self.endpoints),
                limits=scripts.limits(),
                host=self._host,
            )
        self._processor = EventProcessor(catalog, TemplateExecutor(cache), None)
        if self.settings.pipeline.rules_in_lane:
            if not self._local_rules:
                store = make_state_store(self.endpoints)
                for p in self.partitions:
                    self._local_rules[p] = RulePartition(
                        partition=f"p{p}", store=store, clock=SystemClock(), catalog=catalog
                    )
            else:
                for local in self._local_rules.values():
                    local.use(catalog)
        self._rows = RowContext.from_catalog(
            catalog, retention_policy(self.settings), log_detail=self.settings.store.log_detail
        )
        return revision

    async def drain(self) -> dict[str, Any]:
        """Stop pulling, finish the batches in hand, and return the final stats."""
        self._stopping = True
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for puller in self._pullers:
            await puller.stop()
        if self._bus is not None:
            await self._bus.close()
        if self._host is not None:
            await asyncio.get_running_loop().run_in_executor(self._scripts, self._host.close)
        return await self.status()

    # ------------------------------------------------------------------ the loop
    async def _loop(self, partition: int, puller: PartitionPuller) -> None:
        """Fetch -> scripts for batch k+1 overlap the tail (rules, store, triggers, commit,
        ack) of batch k; tails run strictly in order, so state and acks keep stream order."""
        pipeline = self.settings.pipeline
        tail: asyncio.Task[None] | None = None
        while not self._stopping:
            try:
                batch = await puller.fetch(
                    pipeline.batch_size,
                    timeout_s=pipeline.fetch_timeout_s,
                    linger_s=pipeline.linger_s,
                )
            except Exception as exc:  # the bus is down: wait and pull again
                self.stats.last_error = f"fetch: {type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)
                continue
            if not batch:
                continue
            items, processed = await self._retrying(partition, lambda b=batch: self._head(b))
            if tail is not None:
                await tail
            tail = asyncio.create_task(
                self._retrying(
                    partition,
                    lambda b=batch, i=items, p=processed: self._tail(partition, puller, b, i, p),
                )
            )
        if tail is not None:
            await tail

    async def _retrying(self, partition: int, step: Any) -> Any:
        """Run ``step`` until it succeeds: a failed batch is retried in place with backoff
        (the partition waits, so order holds); nothing is acknowledged before it succeeds."""
        delay = 0.05
        while True:
            try:
                return await step()
            except Exception as exc:
                self.stats.retries += 1
                self.stats.last_error = f"p{partition}: {type(exc).__name__}: {exc}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _head(self, deliveries: list[Delivery]) -> tuple[list[Ingested], ProcessedBatch]:
        items = [
            Ingested(
                d.headers.get("Nats-Msg-Id", f"seq-{d.seq}"),
                d.headers.get(HEADER_SOURCE, ""),
                d.body,
                d.headers.get(HEADER_RECEIVED, ""),
                d.seq,
            )
            for d in deliveries
        ]
        t0 = time.perf_counter()
        processed = await asyncio.get_running_loop().run_in_executor(
            self._scripts, self._process, items
        )
        self.stats.stage_s["scripts"] += time.perf_counter() - t0
        return items, processed

    async def _tail(
        self,
        partition: int,
        puller: PartitionPuller,
        deliveries: list[Delivery],
        items: list[Ingested],
        processed: ProcessedBatch,
    ) -> None:
        loop = asyncio.get_running_loop()
        stage = self.stats.stage_s
        t1 = time.perf_counter()
        outcome = BatchOutcome()
        local = self._local_rules.get(partition)
        rules: Any = self.rule_actors.get(partition)
        if processed.rule_inputs:
            if local is not None:
                outcome = await loop.run_in_executor(
                    self._scripts, local.evaluate, processed.rule_inputs
                )
            else:
                outcome = await rules.evaluate.remote(processed.rule_inputs)
        processed.rules = outcome
        t2 = time.perf_counter()
        stage["rules"] += t2 - t1
        redelivered = {
            d.headers.get("Nats-Msg-Id", ""): d.delivered for d in deliveries if d.delivered > 1
        }
        blocks, count = await loop.run_in_executor(
            self._scripts, self._rows_for, processed, items, redelivered
        )
        await self.store.insert_blocks.remote(blocks, count)
        t3 = time.perf_counter()
        stage["store"] += t3 - t2
        await self._publish_outputs(processed)
        t4 = time.perf_counter()
        stage["triggers"] += t4 - t3
        if processed.rule_inputs:
            if local is not None:
                status = await loop.run_in_executor(self._scripts, local.commit, outcome.seq)
            else:
                status = await rules.commit.remote(outcome.seq)
            if status == "no-pending":
                raise RuntimeError(
                    f"rule partition p{partition} restarted before commit; re-evaluating"
                )
        t5 = time.perf_counter()
        stage["commit"] += t5 - t4
        await puller.ack_through(deliveries[-1])
        stage["ack"] += time.perf_counter() - t5
        self.stats.batches += 1
        self.stats.events += len(processed.events)
        self.stats.failed += len(processed.failures)
        now = time.time()
        for item in items:
            with contextlib.suppress(ValueError):
                received = datetime.fromisoformat(item.received_at).timestamp()
                self.stats.latencies_ms.append((now - received) * 1000)

    def _process(self, items: list[Ingested]) -> ProcessedBatch:  # script thread
        assert self._processor is not None
        return self._processor.process(items)

    def _rows_for(
        self, processed: ProcessedBatch, items: list[Ingested], redelivered: dict[str, int]
    ) -> tuple[dict[str, bytes], int]:  # script thread: rows encoded here, not in the store
        assert self._rows is not None
        rows = batch_rows(
            processed, self._rows, now=datetime.now(UTC), ingested=items, deliveries=redelivered
        )
        blocks = {table: json_each_row(items_) for table, items_ in rows.items() if items_}
        return blocks, sum(len(items_) for items_ in rows.values())

    async def _publish_outputs(self, processed: ProcessedBatch) -> None:
        assert self._bus is not None
        nats = self.settings.nats
        publishes = [
            self._bus.publish(nats.trigger_subject, group.to_bytes(), msg_id=group.dedup_id())
            for group in delivery_groups(processed)
        ]
        if publishes:
            await asyncio.gather(*publishes)
        # `publish` routes fan out on core NATS (subscribers of that subject, at most once);
        # they are not part of the eventray stream.
        published = False
        for event in processed.events:
            for dispatch in event.routing.dispatches:
                if dispatch.kind == "publish" and dispatch.target:
                    body = orjson.dumps(
                        {
                            "eventTrackerId": event.event_tracker_id,
                            "orgId": event.org_id,
                            "assetId": event.asset.id,
                            "event": event.event,
                        }
                    )
                    await self._bus.client.publish(dispatch.target, body)
                    published = True
        if published:
            await self._bus.client.flush()

    # ------------------------------------------------------------------ observability
    async def reset_stats(self) -> None:
        """Start counting afresh (benchmarks measure one phase at a time)."""
        self.stats = _Stats()

    async def status(self) -> dict[str, Any]:
        lag = {}
        if self._bus is not None and not self._stopping:
            for p in self.partitions:
                with contextlib.suppress(Exception):
                    lag[p] = await self._bus.pending(p)
        latencies = sorted(self.stats.latencies_ms)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(len(latencies) * q))] if latencies else 0.0

        return {
            "partitions": self.partitions,
            "events": self.stats.events,
            "failed": self.stats.failed,
            "batches": self.stats.batches,
            "retries": self.stats.retries,
            "lag": lag,
            "stage_s": dict(self.stats.stage_s),
            "latency_p50_ms": pct(0.5),
            "latency_p99_ms": pct(0.99),
            "last_error": self.stats.last_error,
            "script_host": asdict(self._host.stats) if self._host is not None else None,
            "revision": self.revision,
            "uptime_s": time.monotonic() - self.stats.started,
        }
