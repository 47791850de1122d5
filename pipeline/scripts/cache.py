"""The compiled-script cache: L0 warm contexts, L1 local disk, L2 a shared BlobStore.

Keys are ``{templateId}/{contentHash}-e{engineVersion}``: an edited template has a new hash, so
stale code can never run; a new engine version invalidates every entry.

* **L0 (RAM)**: live runners, LRU-bounded, either in this thread (:class:`ScriptRunner`) or in
  the crash-isolated script host process (:class:`HostedRunner`). Their QuickJS functions are
  compiled, so a hit costs nothing.
* **L1 (local disk)** and **L2 (BlobStore, MinIO/S3 in production)**: the prepared bundle
  (wrapped and codec-detected sources). The ``quickjs`` binding offers no bytecode
  serialisation, so a miss in L0 always parses the JS again; what L1/L2 spare is preparation
  and a known-good program shared by every executor.
* **Compile fallback**: build the bundle from the template, then fill L1 and L2.

A template whose scripts do not compile is remembered in L0 as failed, so a poisoned template
costs one compile, not one per batch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.models.template import AssetTemplate
from eventray.pipeline.ports import BlobStore
from eventray.pipeline.scripts.bundle import Bundle, bundle_for_template, template_bundle_key
from eventray.pipeline.scripts.host import HostedRunner, ScriptHost
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.runner import ScriptResult, ScriptRunner

__all__ = ["CacheStats", "ScriptCache", "WarmRunner"]


class WarmRunner(Protocol):
    """A template's compiled stages, ready to run: in this process (:class:`ScriptRunner`) or
    in a crash-isolated child (:class:`HostedRunner`)."""

    def run(self, payloads: list[Any], *, trace: bool = False) -> list[ScriptResult]: ...

    def run_raw(self, bodies: list[bytes], *, trace: bool = False) -> list[ScriptResult]: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class CacheStats:
    l0_hits: int = 0
    l1_hits: int = 0
    l2_hits: int = 0
    compiles: int = 0
    evictions: int = 0


class ScriptCache:
    """Finds or builds the runner for a template.

    Args:
        capacity: how many warm contexts L0 keeps.
        l1: this node's store for L1 (a local directory in production), or None to skip L1.
        l2: shared blob store for L2, or None to skip L2.
        limits: limits for every runner this cache builds.
        host: run the warm contexts in this crash-isolated child process (the pipeline's
            default) instead of in the calling thread (CLI, tests, benchmarks of the engine).
    """

    def __init__(
        self,
        *,
        capacity: int = 256,
        l1: BlobStore | None = None,
        l2: BlobStore | None = None,
        limits: ScriptLimits | None = None,
        host: ScriptHost | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.l1 = l1
        self.l2 = l2
        self.limits = limits or (host.limits if host is not None else ScriptLimits())
        self.host = host
        self.stats = CacheStats()
        self._l0: OrderedDict[str, WarmRunner | ScriptError] = OrderedDict()

    def __len__(self) -> int:
        return len(self._l0)

    def runner_for(self, template: AssetTemplate) -> WarmRunner:
        """The warm runner for ``template``.

        Raises:
            ScriptError: the template's scripts do not compile (names the stage and line).
        """
        key = template_bundle_key(template)
        hit = self._l0.get(key)
        if hit is not None:
            self._l0.move_to_end(key)
            self.stats.l0_hits += 1
            if isinstance(hit, ScriptError):
                raise ScriptError(hit.stage, hit.message, line=hit.line)
            return hit
        bundle = self._bundle(template)
        try:
            entry: WarmRunner | ScriptError = (
                HostedRunner(self.host, key, bundle)
                if self.host is not None
                else ScriptRunner(bundle, limits=self.limits)
            )
        except ScriptError as exc:
            # Keep a copy without traceback: a cached exception whose traceback reaches this
            # frame would form a reference cycle (see ScriptRunner._fresh_context).
            entry = ScriptError(exc.stage, exc.message, line=exc.line)
        self._l0[key] = entry
        while len(self._l0) > self.capacity:
            _, evicted = self._l0.popitem(last=False)
            if not isinstance(evicted, ScriptError):
                evicted.close()
            self.stats.evictions += 1
        if isinstance(entry, ScriptError):
            raise ScriptError(entry.stage, entry.message, line=entry.line)
        return entry

    def invalidate(self, template_id: str | None = None) -> None:
        """Drop warm contexts for one template (all of its versions), or for every template."""
        keys = [k for k in self._l0 if template_id is None or k.split("/", 1)[0] == template_id]
        for key in keys:
            entry = self._l0.pop(key)
            if not isinstance(entry, ScriptError):
                entry.close()

    def _bundle(self, template: AssetTemplate) -> Bundle:
        blob_key = f"bundles/{template_bundle_key(template)}.json"
        for level, store in (("l1", self.l1), ("l2", self.l2)):
            if store is None:
                continue
            raw = store.get(blob_key)
            if raw is None:
                continue
            try:
                cached = Bundle.from_bytes(raw)
            except (ValueError, TypeError, KeyError):
                continue  # a corrupt or foreign entry is rebuilt, not trusted
            if level == "l1":
                self.stats.l1_hits += 1
            else:
                self.stats.l2_hits += 1
                if self.l1 is not None:
                    self.l1.put(blob_key, raw)
            return cached
        self.stats.compiles += 1
        built = bundle_for_template(template)
        raw = built.to_bytes()
        for store in (self.l1, self.l2):
            if store is not None:
                store.put(blob_key, raw)
        return built
