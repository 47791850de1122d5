"""The API actor: hosts :class:`eventray.actors.api_app.ApiApp` (the management API) in the
cluster, beside the ingress.

It holds the ``api`` role's credentials: the config store and token store it serves, and a NATS
user that may only announce config changes (the notice every actor reloads on after a write,
as after ``eventray apply``). The services read the store's revision on every request, so the
actor has nothing to do when another writer changes the entities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import ray

from eventray.actors.api_app import ApiApp
from eventray.actors.api_overview import Lag, overview_router
from eventray.actors.api_reads import StoreActorData, reads_router, reads_state
from eventray.actors.api_replay import ReplayActorClient, replay_router
from eventray.actors.api_secrets import secrets_router
from eventray.actors.host import ActorHost
from eventray.config.settings import Settings
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.management import EntityService, TokenService
from eventray.pipeline.management.secrets import SecretHolders, SecretService
from eventray.pipeline.ports import Adapters, ConfigStore, Stream, TokenStore
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.secret_store import SecretStore

__all__ = ["ApiActor"]

_NOTICE_S = 5.0
Prepare = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _lag_reader(stream: Stream, loop: asyncio.AbstractEventLoop) -> Lag:
    """The partitions' consumer lag, read on the actor's loop (where ``stream`` is connected)
    for a request served on the API's own."""

    async def pending(partitions: Sequence[int]) -> dict[int, int]:
        return {p: await stream.pending(p) for p in partitions}

    async def lag(partitions: Sequence[int]) -> dict[int, int]:
        future = asyncio.run_coroutine_threadsafe(pending(partitions), loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), _NOTICE_S)
        except (RetryableError, TimeoutError) as exc:
            raise RetryableError(f"the stream cannot tell the lag: {exc}") from None

    return lag


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ApiActor(ActorHost):
    """Args:
    settings: the settings tree (``api`` says where to listen).
    adapters: the ``api`` role's wiring.
    prepare: what documents become before they are stored (device passwords hashed), from
        the composition root.
    ingress_url: where the ingestion endpoints are served, for the OpenAPI document.
    """

    def __init__(
        self,
        settings: Settings,
        adapters: Adapters,
        *,
        prepare: Prepare | None = None,
        ingress_url: str = "",
    ) -> None:
        super().__init__(settings, adapters, thread_name="api")
        self._prepare = prepare
        self._ingress_url = ingress_url or f"http://{settings.ingress.host}:{settings.ingress.port}"
        self._app: ApiApp | None = None
        self._stores: tuple[ConfigStore, TokenStore, SecretStore] | None = None
        self._scripts: ScriptHost | None = None

    async def open(self, stream: Stream, catalog: Catalog) -> None:
        loop = asyncio.get_running_loop()

        def notify() -> None:  # from a request's worker thread, onto the actor's loop
            asyncio.run_coroutine_threadsafe(stream.config_changed(), loop).result(_NOTICE_S)

        config, tokens = self.adapters.config_store(), self.adapters.token_store()
        secrets = self.adapters.secret_store()
        self._stores = (config, tokens, secrets)
        # Template test runs (the console's) under the lanes' limits, in a child process as
        # the lanes' scripts when scripts.isolate: a crashing script fails its payload only.
        limits = self.settings.scripts.limits()
        self._scripts = ScriptHost(limits) if self.settings.scripts.isolate else None
        entities = EntityService(
            config, prepare=self._prepare, notify=notify, holders=SecretHolders(secrets)
        )
        app = ApiApp(
            entities=entities,
            tokens=TokenService(tokens),
            settings=self.settings.api,
            ingress_url=self._ingress_url,
            # Other parts of the API plug in here: their APIRouters (routes taking
            # eventray.actors.api_auth's Viewer/Editor/Admin) and what they need on app.state.
            # Stored data is read through the store actor; redrive and replay run in the
            # replay actor (eventray.actors.replay), with the caller's scope.
            routers=(reads_router(), overview_router(), replay_router(), secrets_router()),
            state={
                **reads_state(StoreActorData(), entities),
                "replays": ReplayActorClient(),
                "secrets": SecretService(secrets, self.adapters.secret_cipher()),
                "script_limits": limits,
                "script_host": self._scripts,
                "partitions": self.settings.pipeline.partitions,
                "lag": _lag_reader(stream, loop),
            },
        )
        await app.start()
        self._app = app

    async def port(self) -> int:
        """The port the API listens on (after :meth:`start`)."""
        await self.start()
        assert self._app is not None
        return self._app.port

    async def use(self, catalog: Catalog) -> None:
        """Nothing: the services follow the store's revision on every request."""

    async def close(self) -> None:
        if self._app is not None:
            await self._app.stop()
            self._app = None
        if self._scripts is not None:
            self._scripts.close()
            self._scripts = None
        if self._stores is not None:
            for store in self._stores:
                store.close()
            self._stores = None

    async def status(self) -> dict[str, Any]:
        return {"port": self._app.port if self._app is not None else 0}
