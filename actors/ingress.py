"""The ingress actor: hosts :class:`eventray.actors.ingress_app.IngressApp` in the cluster and
keeps it on the current catalog."""

from __future__ import annotations

from typing import Any

import ray

from eventray.actors.host import ActorHost
from eventray.actors.ingress_app import IngressApp
from eventray.actors.store import StoreClient
from eventray.config.settings import Settings
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ingest_tokens import IngestTokens
from eventray.pipeline.ingress import IngressPolicy
from eventray.pipeline.jwks import JwksCache
from eventray.pipeline.models.datasource import ApiTokenAuth
from eventray.pipeline.ports import Adapters, Stream
from eventray.pipeline.storage.rows import RowContext

__all__ = ["IngressActor"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class IngressActor(ActorHost):
    def __init__(self, settings: Settings, adapters: Adapters, *, store: str = "store") -> None:
        super().__init__(settings, adapters, thread_name="ingress")
        self._store = StoreClient(store)
        self._app: IngressApp | None = None
        self._keys: JwksCache | None = None
        self._tokens: IngestTokens | None = None

    async def open(self, stream: Stream, catalog: Catalog) -> None:
        # OAuth2 data sources' key sets: one cache for the actor's life, across catalogs.
        if self._keys is None:
            self._keys = self.settings.ingress.key_sets(self.adapters.jwks_fetch())
        policy, rows = self._policy(catalog)
        app = IngressApp(
            stream=stream,
            policy=policy,
            rows=rows,
            settings=self.settings.ingress,
            partitions=self.settings.pipeline.partitions,
            keep=self._store.write,
            mqtt=self.settings.mqtt.enabled,
        )
        await app.start()
        self._app = app

    async def port(self) -> int:
        """The port the ingress listens on (after :meth:`start`)."""
        await self.start()
        assert self._app is not None
        return self._app.port

    async def use(self, catalog: Catalog) -> None:
        if self._app is not None:
            self._app.use(*self._policy(catalog))

    def _policy(self, catalog: Catalog) -> tuple[IngressPolicy, RowContext]:
        # The token store is opened once a data source takes API tokens, and kept (its cache
        # with it) across catalogs.
        if self._tokens is None and any(
            isinstance(s.auth, ApiTokenAuth) for s in catalog.data_sources.values()
        ):
            self._tokens = IngestTokens(self.adapters.token_store())
        policy = IngressPolicy(
            catalog,
            partitions=self.settings.pipeline.partitions,
            subject_prefix=self.settings.nats.subject_prefix,
            max_body_bytes=self.settings.ingress.max_body_bytes,
            keys=self._keys,
            tokens=self._tokens,
            leeway_s=self.settings.ingress.jwt_leeway_s,
        )
        rows = RowContext.from_catalog(
            catalog, self.settings.store.retention(), log_detail=self.settings.store.log_detail
        )
        return policy, rows

    async def close(self) -> None:
        if self._app is not None:
            await self._app.stop()
            self._app = None
        if self._keys is not None:
            await self._keys.close()
            self._keys = None
        if self._tokens is not None:
            self._tokens.close()
            self._tokens = None

    async def status(self) -> dict[str, Any]:
        if self._app is None:
            return {"port": 0, "lag": 0, "answers": {}, "stream_drops": {}, "last_drop": ""}
        app = self._app
        meter = app.admission.meter
        return {
            "port": app.port,
            "lag": app.lag,
            "queued_s": round(meter.queued_s, 3),
            "drain_per_s": round(meter.drain_per_s, 1),
            "shed": dict(app.shed),
            "answers": dict(app.counts),
            "stream_drops": dict(app.stream_drops),
            "last_drop": app.last_drop,
            "mqtt": {**app.mqtt_counts, "waiting": app.mqtt_waiting} if app.mqtt else {},
        }
