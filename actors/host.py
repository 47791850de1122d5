"""What every eventray actor does besides its work: start once, connect, reload, drain.

An actor's work is an object from ``eventray.pipeline`` (a lane, the ingress app, the trigger
dispatcher); the actor only hosts it. :class:`ActorHost` is the one place that owns the
start-up skeleton: the supervisor calls ``start`` on every health check (Ray re-runs only
``__init__`` after a restart), so it must be idempotent, must retry after a start that failed
half way (the stream was not up yet), and must clean up what a failed start opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from eventray.actors.lifecycle import StartOnce
from eventray.config.logs import configure_logging
from eventray.config.settings import Settings
from eventray.pipeline.catalog import Catalog, catalog_from_store
from eventray.pipeline.ports import Adapters, Stream

__all__ = ["NO_ARROW", "SETUP_HOOK", "ActorHost", "actor_name", "forgo_arrow", "log_as_actor"]

T = TypeVar("T")

_log = logging.getLogger(__name__)
_DISCONNECT_S = 2.0  # a drained actor's wait for its stream connection to close

SETUP_HOOK = "eventray.actors.host.forgo_arrow"
"""The job's worker setup hook (see :func:`forgo_arrow`)."""
NO_ARROW = ("EVENTRAY_ACTOR_ARROW", "0")
"""The environment variable, and its value, of actors that never use Arrow."""


def forgo_arrow() -> None:
    """Keep pyarrow out of this process when it asked to (:data:`NO_ARROW` in its
    environment): the job's Ray ``worker_process_setup_hook``.

    Ray imports pyarrow (and numpy) into every worker that has it installed, when it first
    deserializes anything, to register Ray Data's serializers: ~70 MB of RSS per process here,
    for actors that never touch Arrow (every actor but the store). Marking the module absent
    before any task runs makes that import fail the way Ray expects when pyarrow is not
    installed. Actors ask for it through their runtime environment's ``env_vars`` (which Ray
    merges into the job's); the hook runs in every worker of the job, before its first task.
    """
    if os.environ.get(NO_ARROW[0]) == NO_ARROW[1]:
        sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]


def log_as_actor(settings: Settings | None, fallback: str) -> None:
    """Set up this actor process's logging (see :mod:`eventray.config.logs`); every actor's
    ``__init__`` calls it, so a restarted actor logs the same way. ``None``: the defaults."""
    fmt, level = (settings.log.format, settings.log.level) if settings else ("json", "INFO")
    configure_logging(component=actor_name(fallback), fmt=fmt, level=level, propagate=False)


def actor_name(fallback: str) -> str:
    """This actor's Ray name (``lane-0``, ``ingress``): the ``component`` of its log lines."""
    try:
        import ray

        return ray.get_runtime_context().get_actor_name() or fallback
    except Exception:  # outside Ray (a host built in a test): the thread name will do
        return fallback


class ActorHost:
    """Base of the eventray actors (not an actor itself: subclasses add ``@ray.remote``).

    Subclasses implement :meth:`open` (build the work on a connected stream, with the current
    catalog), :meth:`use` (apply a new catalog), :meth:`close` (finish the work in hand) and
    :meth:`status`.

    Args:
        settings: the whole settings tree.
        adapters: builds this process's connections (the composition root's ``Wiring``).
        thread_name: the name of the actor's worker thread, where blocking work runs (QuickJS
            contexts are confined to the thread that created them: one worker thread).
    """

    def __init__(self, settings: Settings, adapters: Adapters, *, thread_name: str) -> None:
        log_as_actor(settings, thread_name)
        self.settings = settings
        self.adapters = adapters
        self.revision = -1
        self.stream: Stream | None = None
        self._once = StartOnce()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._reloading = asyncio.Lock()

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` on the actor's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def load_catalog(self) -> tuple[Catalog, int]:
        """The current entities and their revision, from the config store."""
        store = self.adapters.config_store()
        try:
            return catalog_from_store(store)
        finally:
            store.close()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> bool:
        """Connect and start the work (idempotent; a failed start is tried again)."""
        await self._once.run(self._start)
        return True

    async def _start(self) -> None:
        stream = self.adapters.stream()
        await stream.connect()
        try:
            catalog, revision = await self.run_sync(self.load_catalog)
            await self.open(stream, catalog)
            self.revision = revision
            await stream.watch_config(self._changed)
        except BaseException as exc:
            _log.warning("start failed, tried again at the next health check: %r", exc)
            await self.close()
            await stream.close()  # the next health check starts from scratch
            raise
        self.stream = stream
        _log.info("started on config revision %d", self.revision)

    async def _changed(self) -> None:
        await self.reload()

    async def reload(self) -> int:
        """Apply the config store's current entities (after ``eventray apply``)."""
        async with self._reloading:
            return await self._load_and_use()

    async def catch_up(self, revision: int) -> None:
        """Reload unless the catalog in use is ``revision`` or newer: an event the ingress
        accepted under a newer revision than this actor's must not meet an older catalog
        (the change notice may not have arrived yet)."""
        async with self._reloading:
            if self.revision < revision:
                await self._load_and_use()

    async def _load_and_use(self) -> int:
        catalog, revision = await self.run_sync(self.load_catalog)
        await self.use(catalog)
        if revision != self.revision:
            _log.info("config revision %d in use (was %d)", revision, self.revision)
        self.revision = revision
        return revision

    async def health(self) -> dict[str, Any]:
        """Start if needed (the supervisor's check), then the status."""
        await self.start()
        return {"revision": self.revision, **await self.status()}

    async def drain(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Finish the work in hand and disconnect; returns the final status, with what was
        abandoned under ``abandoned`` (see :meth:`finish`)."""
        _log.info("draining (timeout %s s)", timeout_s)
        abandoned = await self.finish(timeout_s)
        if abandoned:
            _log.warning("drained with %d batches abandoned, delivered again later", len(abandoned))
        if self.stream is not None:
            stream, self.stream = self.stream, None
            # Past the wait, the process ends anyway and the server drops the connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.close(), _DISCONNECT_S)
        return {**await self.status(), "abandoned": abandoned}

    # ------------------------------------------------------------------ the work
    async def open(self, stream: Stream, catalog: Catalog) -> None:
        """Build and start the work."""
        raise NotImplementedError

    async def use(self, catalog: Catalog) -> None:
        """Apply a new catalog to the work."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the work, finishing what is in hand (also after a failed :meth:`open`)."""
        raise NotImplementedError

    async def finish(self, timeout_s: float | None) -> list[Any]:
        """Stop the work for a drain: within ``timeout_s`` when the work can be cut short
        (lanes override this), returning what was abandoned; by default :meth:`close`."""
        await self.close()
        return []

    async def status(self) -> dict[str, Any]:
        """Counters for ``eventray status`` and the metrics."""
        raise NotImplementedError
