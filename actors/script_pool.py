"""The script-executor pool (``pipeline.script_actors > 0``): actors holding warm compiled
templates, and the client a lane runs its batches' scripts through.

Why a pool beside the lanes' own script hosts: with a JS-heavy tenant mix the scripts are the
stage that needs cores, with a rule-heavy one it is the rules, and the lanes (which own the
stream's partitions) should not have to grow for either. A pool actor is a thin host of the
same :class:`~eventray.pipeline.scripts.executor.TemplateExecutor`, cache and limits a lane
uses, in the same crash-isolated child (``scripts.isolate``), so a broken or crashing script
fails its events with the same error, and they go to the DLQ exactly as in a lane.

Scripts are pure functions of (template, body): a batch whose actor died is simply run again on
another one, which is what makes killing, restarting or removing pool actors lose nothing.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from eventray.config.settings import Settings
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ports import Adapters
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.scripts.runner import ScriptResult

__all__ = [
    "SCRIPT_ACTOR_PREFIX",
    "ScriptExecutorActor",
    "ScriptPoolClient",
    "ScriptsUnavailable",
    "script_actor_name",
]

SCRIPT_ACTOR_PREFIX = "scripts-"
_REFRESH_S = 2.0  # how often a client looks for actors added to the pool
_RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)  # waits while no pool actor answers
_SUSPECT_S = 2.0  # a failed actor is passed over for this long (Ray may be restarting it)

_log = logging.getLogger(__name__)


def script_actor_name(index: int) -> str:
    """The Ray name of pool actor ``index`` (indexes are never reused within a stack)."""
    return f"{SCRIPT_ACTOR_PREFIX}{index}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ScriptExecutorActor:
    """Runs script batches for every lane; one batch at a time (a sync actor: QuickJS
    contexts stay on the thread that made them, and the script host is one process)."""

    def __init__(self, settings: Settings, adapters: Adapters) -> None:
        scripts = settings.scripts
        self._host: ScriptHost | None = None
        if scripts.isolate:
            self._host = ScriptHost(scripts.limits())
            self._host.start()
        self._executor = TemplateExecutor(
            ScriptCache(
                capacity=scripts.cache_capacity,
                l1=adapters.local_blob_store(),
                l2=adapters.blob_store(),
                limits=scripts.limits(),
                host=self._host,
            )
        )
        self.batches = 0
        self.events = 0
        self.busy_s = 0.0

    def run(self, jobs: list[ScriptJob], trace: bool = False) -> list[ScriptResult]:
        started = time.perf_counter()
        try:
            return self._executor.run(jobs, trace=trace)
        finally:
            self.busy_s += time.perf_counter() - started
            self.batches += 1
            self.events += len(jobs)

    def stats(self) -> dict[str, Any]:
        cache = self._executor.cache
        return {
            "batches": self.batches,
            "events": self.events,
            "busy_s": round(self.busy_s, 3),
            "warm": len(cache),
            "compiles": cache.stats.compiles,
            "host_crashes": self._host.stats.crashes if self._host is not None else 0,
        }

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None


class ScriptsUnavailable(RetryableError):
    """No script-executor actor answered (the pool is being restarted or was closed)."""


class ScriptPoolClient:
    """A lane's script executor over the pool: each batch goes to the pool actor this client
    has the fewest batches in flight on (ties in turn), and a batch whose actor died runs
    again on another. Members are found by name, so actors added or removed while the stack
    runs (``Stack.scale_stage``) are picked up within a couple of seconds without the lane
    being told. Thread-safe: a lane runs the heads of its partitions on several threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._in_flight: dict[str, int] = {}
        self._suspect: dict[str, float] = {}
        self._refreshed = 0.0
        self._turn = itertools.count(random.randrange(1 << 16))
        self._closed = False
        self.retried = 0

    def close(self) -> None:
        """Stop waiting for the pool: a head still waiting fails (its batch is abandoned)."""
        self._closed = True

    def run(self, jobs: Sequence[ScriptJob], *, trace: bool = False) -> list[ScriptResult]:
        if not jobs:
            return []
        batch = list(jobs)
        waits = iter(_RETRY_S)
        while True:
            if self._closed:
                raise ScriptsUnavailable("the lane is stopping: script batch abandoned")
            name, handle = self._pick()
            if handle is None:
                time.sleep(next(waits, _RETRY_S[-1]))
                continue
            try:
                results: list[ScriptResult] = ray.get(handle.run.remote(batch, trace))
                return results
            except (RayActorError, ActorUnavailableError) as exc:
                self.retried += 1
                _log.warning("script actor %s failed a batch, running it on another: %s",
                             name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)  # fmt: skip
                with self._lock:
                    self._suspect[name] = time.monotonic() + _SUSPECT_S
                    self._refreshed = 0.0  # a removed actor is forgotten at once
            finally:
                with self._lock:
                    if name in self._in_flight:
                        self._in_flight[name] -= 1

    def _pick(self) -> tuple[str, Any]:
        now = time.monotonic()
        if now - self._refreshed >= _REFRESH_S:
            self._refresh(now)
        with self._lock:
            healthy = [n for n in self._handles if self._suspect.get(n, 0.0) <= now]
            candidates = healthy or list(self._handles)
            if not candidates:
                return "", None
            candidates.sort()
            start = next(self._turn) % len(candidates)
            ordered = candidates[start:] + candidates[:start]
            name = min(ordered, key=lambda n: self._in_flight.get(n, 0))
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            return name, self._handles[name]

    def _refresh(self, now: float) -> None:
        names = {
            n for n in ray.util.list_named_actors() if isinstance(n, str) and
            n.startswith(SCRIPT_ACTOR_PREFIX)
        }  # fmt: skip
        found: dict[str, Any] = {}
        for name in names:
            handle = self._handles.get(name)
            if handle is None:
                try:
                    handle = ray.get_actor(name)
                except ValueError:  # gone between the listing and the lookup
                    continue
            found[name] = handle
        with self._lock:
            self._handles = found
            self._in_flight = {n: self._in_flight.get(n, 0) for n in found}
            self._suspect = {n: t for n, t in self._suspect.items() if n in found}
            self._refreshed = now

    def members(self) -> list[str]:
        """The pool actors this client spreads over, looked up again when the last look is
        older than the refresh interval (an idle lane runs no batch that would look: its
        status must still show a resize)."""
        now = time.monotonic()
        if now - self._refreshed >= _REFRESH_S:
            self._refresh(now)
        return sorted(self._handles)
