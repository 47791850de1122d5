"""The ingress actor: hosts :class:`actors.ingress_app.IngressApp` in the cluster and keeps it
on the current catalog (config changes arrive on NATS)."""

from __future__ import annotations

from typing import Any

import ray

from eventray.actors.ingress_app import IngressApp
from eventray.actors.lifecycle import StartOnce
from eventray.cluster.wiring import (
    Endpoints,
    catalog_from,
    make_bus,
    make_config_store,
    retention_policy,
)
from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.ingress import IngressPolicy
from eventray.pipeline.storage.rows import RowContext

__all__ = ["IngressActor"]

CONFIG_SUBJECT = "eventray.config"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IngressActor:
    def __init__(self, settings: Settings, endpoints: Endpoints, store_actor: Any) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.store = store_actor
        self._bus: JetStreamBus | None = None
        self._app: IngressApp | None = None
        self._once = StartOnce()

    async def start(self) -> int:
        """Start serving; returns the port (idempotent; retried after a failed start)."""
        await self._once.run(self._start)
        assert self._app is not None
        return self._app.port

    async def _start(self) -> None:
        bus = make_bus(self.settings, self.endpoints)
        await bus.connect()
        app: IngressApp | None = None
        try:
            policy, rows = self._catalog()
            app = IngressApp(
                bus=bus,
                policy=policy,
                rows=rows,
                settings=self.settings.ingress,
                partitions=self.settings.pipeline.partitions,
                keep=lambda rows_: self.store.insert_rows.remote(rows_),
            )
            await bus.client.subscribe(CONFIG_SUBJECT, cb=self._on_config)
            await app.start()
        except BaseException:
            if app is not None:
                await app.stop()
            await bus.close()  # the next health check starts from scratch
            raise
        self._bus, self._app = bus, app

    async def health(self) -> dict[str, Any]:
        port = await self.start()
        assert self._app is not None
        return {"port": port, "lag": self._app.lag, "answers": dict(self._app.counts)}

    async def _on_config(self, msg: Any) -> None:
        self.reload()

    def reload(self) -> None:
        if self._app is not None:
            self._app.use(*self._catalog())

    def _catalog(self) -> tuple[IngressPolicy, RowContext]:
        catalog, _ = catalog_from(make_config_store(self.endpoints))
        policy = IngressPolicy(
            catalog,
            partitions=self.settings.pipeline.partitions,
            subject_prefix=self.settings.nats.subject_prefix,
            max_body_bytes=self.settings.ingress.max_body_bytes,
        )
        rows = RowContext.from_catalog(
            catalog, retention_policy(self.settings), log_detail=self.settings.store.log_detail
        )
        return policy, rows

    async def stop(self) -> None:
        if self._app is not None:
            await self._app.stop()
        if self._bus is not None:
            await self._bus.close()
