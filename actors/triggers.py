"""The trigger actor: hosts a :class:`eventray.pipeline.triggers.dispatcher.TriggerDispatcher`
on the trigger queue, behind its own queue so a slow webhook never holds a partition back."""

from __future__ import annotations

from typing import Any

import ray

from eventray.actors.host import ActorHost
from eventray.actors.store import StoreClient
from eventray.config.settings import Settings
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ports import Adapters, Queue, Stream
from eventray.pipeline.secrets import EnvSecrets
from eventray.pipeline.storage.rows import RowContext
from eventray.pipeline.triggers.delivery import Deliverer
from eventray.pipeline.triggers.dispatcher import TriggerDispatcher
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy

__all__ = ["TriggerActor"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class TriggerActor(ActorHost):
    def __init__(self, settings: Settings, adapters: Adapters, *, store: str = "store") -> None:
        super().__init__(settings, adapters, thread_name="triggers")
        self._store = StoreClient(store)
        self._sender = adapters.sender()
        self._queue: Queue | None = None
        self._dispatcher: TriggerDispatcher | None = None

    async def open(self, stream: Stream, catalog: Catalog) -> None:
        t = self.settings.triggers
        # Retries with backoff hold a group unacknowledged: the wait covers the longest one.
        self._queue = await stream.queue(
            "triggers",
            self.settings.nats.trigger_subject,
            ack_wait_s=300.0,
            max_pending=t.concurrency * 4,
        )
        deliverer, rows = self._deliverer(catalog)
        self._dispatcher = TriggerDispatcher(
            queue=self._queue,
            deliverer=deliverer,
            sink=self._store,
            rows=rows,
            concurrency=t.concurrency,
        )
        self._dispatcher.start()

    def _deliverer(self, catalog: Catalog) -> tuple[Deliverer, RowContext]:
        t = self.settings.triggers
        deliverer = Deliverer(
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
        rows = RowContext.from_catalog(
            catalog, self.settings.store.retention(), log_detail=self.settings.store.log_detail
        )
        return deliverer, rows

    async def use(self, catalog: Catalog) -> None:
        if self._dispatcher is not None:
            self._dispatcher.use(*self._deliverer(catalog))

    async def close(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.stop()
        if self._queue is not None:
            await self._queue.close()
        close = getattr(self._sender, "close", None)
        if close is not None:
            await close()

    async def status(self) -> dict[str, Any]:
        if self._dispatcher is None:
            return {"delivered": 0, "failed": 0, "attempts": 0, "last_error": ""}
        return self._dispatcher.status()
