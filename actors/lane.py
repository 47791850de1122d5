"""The lane actor: hosts a :class:`eventray.pipeline.lane.Lane` for some partitions, and a
trigger dispatcher.

The lane's logic (the loop, the batch's head and tail, retries and the narrowing of failures)
lives in ``eventray.pipeline``; this actor builds it from the adapters it is handed, keeps it
on the current catalog and reports its counters.

Trigger deliveries are dispatched by the lanes too: every lane runs a
:class:`~eventray.pipeline.triggers.dispatcher.TriggerDispatcher` on the one trigger queue,
which JetStream shares out among them, so delivery capacity grows with the lanes and needs no
process of its own (a separate trigger actor cost ~155 MB of RSS for work that is mostly
waiting on the network). A slow webhook still never holds a partition back: deliveries are
tasks of their own, on a queue of their own.

By default lanes *are* the script-executor pool: each holds warm compiled templates in its
script host, and more lanes (a setting) is more executors. Why the host is a child process and
not a Ray actor of its own: it needs no scheduling or naming, only crash containment (QuickJS
can segfault on out-of-memory) and a core of its own, and a pipe is cheaper than an actor call.
With ``pipeline.script_actors`` set, the lane sends its scripts to the script-executor actor
pool instead (:mod:`eventray.actors.script_pool`), and runs the heads of its partitions on
several threads, so one lane can keep several pool actors busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

import ray

from eventray.actors.host import ActorHost, actor_name
from eventray.actors.rules import RuleActorsClient, RuleLayout
from eventray.actors.script_pool import ScriptPoolClient
from eventray.actors.store import StoreClient
from eventray.config.settings import Settings
from eventray.pipeline.batch import BatchPipeline
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.lane import Abandoned, Lane
from eventray.pipeline.ports import Adapters, Queue, Stream
from eventray.pipeline.rules.stage import LocalRules, RuleStage
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptExecutor, TemplateExecutor
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.storage.rows import RowContext
from eventray.pipeline.triggers.delivery import Deliverer
from eventray.pipeline.triggers.dispatcher import TriggerDispatcher
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy

if TYPE_CHECKING:
    from eventray.actors.ray_metrics import LaneMetrics

__all__ = ["LaneActor"]

T = TypeVar("T")
_SWITCH_INTERVAL_S = 0.001
_log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class LaneActor(ActorHost):
    """Owns ``partitions``: one loop per partition, one worker thread for all.

    Args:
        settings: the settings tree.
        adapters: builds this process's connections.
        partitions: the partitions this lane owns.
        store: the store actor's name.
        rule_layout: the rule actors' (generation, count), when rules run in actors
            (``pipeline.rule_actors > 0``).
    """

    def __init__(
        self,
        settings: Settings,
        adapters: Adapters,
        partitions: list[int],
        *,
        store: str = "store",
        rule_layout: RuleLayout | None = None,
    ) -> None:
        super().__init__(settings, adapters, thread_name="quickjs")
        # The event loop shares the GIL with the rules thread and the delivery threads; a
        # shorter switch interval than Python's 5 ms hands it back sooner. Measured at
        # 4,600 events/s on 2 lanes (near the knee): p50 62-108 ms with 1 ms, 120-145 with 5.
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self.partitions = partitions
        self._store = StoreClient(store)  # one client: the lane and its dispatcher share calls
        self._rule_layout = rule_layout
        self._pool = ScriptPoolClient() if settings.pipeline.script_actors else None
        # With the pool, heads of different partitions overlap: each waits on a pool actor.
        self._heads = (
            ThreadPoolExecutor(max_workers=settings.pipeline.partitions, thread_name_prefix="head")
            if self._pool is not None
            else None
        )
        self._host: ScriptHost | None = None
        self._cache: ScriptCache | None = None
        self._sender = adapters.sender()
        self._secrets = adapters.secrets()
        # Rules get a thread of their own: on the scripts thread they would wait behind the
        # head of the next batch (which mostly waits for the script host), and the head
        # behind their state store round trips. The two waits now overlap.
        self._rules_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules")
        self._queue: Queue | None = None
        self._dispatcher: TriggerDispatcher | None = None
        self.lane: Lane | None = None
        self._metrics: LaneMetrics | None = None
        self._publisher: asyncio.Task[None] | None = None

    async def open(self, stream: Stream, catalog: Catalog) -> None:
        scripts, pipeline = self.settings.scripts, self.settings.pipeline
        if scripts.isolate and self._host is None and self._pool is None:
            self._host = ScriptHost(scripts.limits())
            await self.run_sync(self._host.start)
        if self._cache is None and self._pool is None:
            self._cache = ScriptCache(
                capacity=scripts.cache_capacity,
                l1=self.adapters.local_blob_store(),
                l2=self.adapters.blob_store(),
                limits=scripts.limits(),
                host=self._host,
            )
        rules: RuleStage
        if self._rule_layout is not None:
            rules = RuleActorsClient(self._rule_layout)
            rules.own(self.partitions)
        else:
            rules = LocalRules(
                partitions=self.partitions,
                store=self.adapters.state_store(),
                clock=SystemClock(),
                catalog=catalog,
                run_sync=self._run_rules,
            )
        if self.settings.metrics.ray and self._metrics is None:
            from eventray.actors.ray_metrics import LaneMetrics

            self._metrics = LaneMetrics(actor_name("lane"))
        executor: ScriptExecutor
        if self._pool is not None:
            executor = self._pool
        else:
            assert self._cache is not None
            executor = TemplateExecutor(self._cache)
        batch = BatchPipeline(
            catalog=catalog,
            observer=self._metrics,
            executor=executor,
            rules=rules,
            sink=self._store,
            outbox=stream.outbox(),
            clock=SystemClock(),
            retention=self.settings.store.retention(),
            log_detail=self.settings.store.log_detail,
            trigger_subject=self.settings.nats.trigger_subject,
        )
        sources = {p: await stream.source(p) for p in self.partitions}
        self.lane = Lane(
            batch,
            sources,
            batch_size=pipeline.batch_size,
            linger_s=pipeline.linger_s,
            fetch_timeout_s=pipeline.fetch_timeout_s,
            run_sync=self.run_sync if self._heads is None else self._run_head,
            catch_up=self.catch_up,
            observer=self._metrics,
        )
        self.lane.start()
        if self._metrics is not None:
            self._publisher = asyncio.create_task(self._publish(self._metrics))
        triggers = self.settings.triggers
        # Retries with backoff hold a group unacknowledged: the wait covers the longest one.
        self._queue = await stream.queue(
            "triggers",
            self.settings.nats.trigger_subject,
            ack_wait_s=300.0,
            max_pending=triggers.concurrency * 4,
        )
        deliverer, rows = self._deliverer(catalog)
        self._dispatcher = TriggerDispatcher(
            queue=self._queue,
            deliverer=deliverer,
            sink=self._store,
            rows=rows,
            concurrency=triggers.concurrency,
        )
        self._dispatcher.start()

    async def _publish(self, metrics: LaneMetrics) -> None:
        """Every ``metrics.ray_interval_s``: the lag of the partitions owned, this lane's
        gauge and the trigger counters, for Ray's metrics export."""
        interval = self.settings.metrics.ray_interval_s
        while True:
            lane = self.lane
            if lane is not None:
                lag: dict[int, int] = {}
                for partition, source in list(lane.sources.items()):
                    with contextlib.suppress(Exception):  # the stream is away: next round
                        lag[partition] = await source.pending()
                dispatcher = self._dispatcher
                metrics.publish(lag, dispatcher.status() if dispatcher is not None else {})
            await asyncio.sleep(interval)

    async def _run_head(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._heads is not None
        return await asyncio.get_running_loop().run_in_executor(self._heads, fn, *args)

    async def use_rules(self, layout: RuleLayout) -> None:
        """Evaluate rules on the rule actors of ``layout`` from the next call on (the driver
        rescaled the rule actors; see :class:`RuleActorsClient`)."""
        self._rule_layout = layout
        rules = self.lane.pipeline.rules if self.lane is not None else None
        if isinstance(rules, RuleActorsClient):
            rules.relayout(layout)

    async def _run_rules(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._rules_thread, fn, *args)

    def _deliverer(self, catalog: Catalog) -> tuple[Deliverer, RowContext]:
        t = self.settings.triggers
        deliverer = Deliverer(
            catalog.triggers,
            self._sender,
            secrets=self._secrets,
            lineage=catalog.lineage,
            retry=RetryPolicy(
                max_attempts=t.max_attempts,
                base_delay_s=t.backoff_base_s,
                max_delay_s=t.backoff_max_s,
            ),
            breaker=CircuitBreaker(threshold=t.circuit_failures, reset_s=t.circuit_reset_s),
        )
        rows = RowContext.from_catalog(
            catalog, self.settings.store.retention(), log_detail=self.settings.store.log_detail
        )
        return deliverer, rows

    async def use(self, catalog: Catalog) -> None:
        if self._dispatcher is not None:
            self._dispatcher.use(*self._deliverer(catalog))
        if self.lane is None:
            return
        rules = self.lane.pipeline.rules
        if isinstance(rules, RuleActorsClient):
            await rules.reload()
        await self.run_sync(self.lane.pipeline.use, catalog)

    async def close(self) -> None:
        await self.finish(None)

    async def finish(self, timeout_s: float | None) -> list[Any]:
        """Stop the partitions' loops and the trigger dispatcher together, within
        ``timeout_s`` if given; returns the batches abandoned (:class:`Abandoned`), and logs
        trigger groups abandoned. A head abandoned in the script host holds the worker thread:
        the host's child is killed rather than closed on that thread."""
        abandoned: list[Abandoned] = []
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        lane, dispatcher = self.lane, self._dispatcher
        self._dispatcher = None
        stops: list[Awaitable[Any]] = []
        if lane is not None:
            stops.append(lane.stop(timeout_s))
        if dispatcher is not None:
            stops.append(dispatcher.stop(timeout_s))
        results = await asyncio.gather(*stops)
        if self._pool is not None:  # a head still waiting for the pool was abandoned: stop it
            self._pool.close()
        if lane is not None:
            abandoned = results[0]
            for source in lane.sources.values():
                await source.close()
        if dispatcher is not None and results[-1]:
            _log.warning("stop: %d trigger groups abandoned, delivered again later", results[-1])
        if self._queue is not None:
            await self._queue.close()
            self._queue = None
        close = getattr(self._sender, "close", None)
        if close is not None:
            await close()
        if self._host is not None:
            if any(batch.stage == "head" for batch in abandoned):
                self._host.kill()
            else:
                await self.run_sync(self._host.close)
            self._host = None
        return abandoned

    async def assign(self, partitions: list[int]) -> list[int]:
        """Own exactly ``partitions`` from now on; returns them.

        Partitions given up are released first (their batches in hand finished and
        acknowledged, their consumers left for the next owner), so the driver moves a
        partition by calling this on the lane losing it, then on the lane gaining it. The
        driver also calls it on every supervision round: a lane Ray restarted comes back
        with the partitions it was created with, and must not keep one that has moved.
        """
        wanted = sorted(set(partitions))
        lane = self.lane
        if lane is None or self.stream is None:
            self.partitions = wanted
            return wanted
        for partition in sorted(set(lane.sources) - set(wanted)):
            source = await lane.release(partition)
            if source is not None:
                await source.close()
        for partition in sorted(set(wanted) - set(lane.sources)):
            lane.acquire(partition, await self.stream.source(partition))
        rules = lane.pipeline.rules
        if isinstance(rules, (LocalRules, RuleActorsClient)):
            rules.own(wanted)
        self.partitions = wanted
        return wanted

    async def pause(self) -> None:
        """Stop pulling after the batches in hand (they are finished and acknowledged); the
        partitions stay owned. Operators pause a lane to let a backlog build, benchmarks to
        measure draining one."""
        if self.lane is not None:
            await self.lane.stop()

    async def resume(self) -> None:
        """Pull again after :meth:`pause`."""
        if self.lane is not None and not self.lane.running:
            self.lane.start()

    async def handled(self) -> int:
        """Events carried to the store or the DLQ since the stats were reset (cheap: no
        round trip to the stream, unlike :meth:`status`)."""
        if self.lane is None:
            return 0
        return self.lane.stats.events + self.lane.stats.failed

    async def node(self) -> str:
        """The Ray node this lane runs on (cheap, unlike :meth:`status`)."""
        return str(ray.get_runtime_context().get_node_id())

    async def reset_stats(self) -> None:
        """Start counting afresh (benchmarks measure one phase at a time)."""
        if self.lane is not None:
            self.lane.reset_stats()

    async def status(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "partitions": self.partitions,
            "revision": self.revision,
            # which Ray node runs it: lanes spread over nodes, and move when one is lost
            "node": ray.get_runtime_context().get_node_id(),
        }
        if self.lane is None:
            return {**base, "events": 0, "failed": 0, "lag": {}, "stage_s": {}, "triggers": {}}
        host = asdict(self._host.stats) if self._host is not None else None
        if self._pool is not None:
            host = {"pool": self._pool.members(), "retried": self._pool.retried}
        triggers = self._dispatcher.status() if self._dispatcher is not None else {}
        return {**base, **await self.lane.status(), "script_host": host, "triggers": triggers}
