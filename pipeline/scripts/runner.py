"""Runs one bundle over batches of payloads inside one QuickJS context.

QuickJS contexts are thread-confined: a context used from a thread other than its creator
segfaults (DESIGN.md). A :class:`ScriptRunner` therefore remembers its creating thread and
refuses calls from any other; script-executor actors are single-threaded for the same reason.

One batch costs a handful of Python->JS crossings, not one per event: the batch is handed over
as one JSON array, the JS loop runs every event with a try/catch per stage, and the results come
back as one JSON string. Limits are per event even so:

* a throw, a missing ``result`` or a deep recursion is caught inside JS and fails that event;
* a time-limit interrupt cannot be caught in JS, so the host reads how far the loop got
  (``__partial``), fails the event that was running (if it alone used the whole budget, i.e.
  it was the first of its crossing) or simply resumes at it (the crossing as a whole was slow);
* out-of-memory fails the running event and the context is rebuilt from the bundle, since
  QuickJS gives no guarantee about a runtime that ran out of memory.
"""

from __future__ import annotations

import importlib.resources
import threading
from functools import cache
from typing import Any, Literal, TypedDict

import orjson
import quickjs

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.scripts.bundle import Bundle
from eventray.pipeline.scripts.limits import ScriptLimits

__all__ = ["ScriptResult", "ScriptRunner", "json_array", "prelude_source"]


class ScriptResult(TypedDict, total=False):
    """One event's outcome: ``r`` the final result, or ``e`` ``{stage, message, line?}``;
    ``s`` holds each stage's output when the batch ran with ``trace=True``."""

    r: Any
    e: dict[str, Any]
    s: dict[str, Any]


@cache
def prelude_source() -> str:
    """The JS runtime every context starts with."""
    return (
        importlib.resources.files("eventray.pipeline.scripts") / "js" / "prelude.js"
    ).read_text()


def json_array(bodies: list[bytes]) -> bytes:
    """Message bodies (each a JSON document) spliced into one JSON array, unparsed."""
    return b"[" + b",".join(bodies) + b"]"


FailureKind = Literal["time", "memory", "crash"]


def _classify(exc: BaseException) -> FailureKind:
    text = str(exc)
    if "interrupted" in text:
        return "time"
    if "out of memory" in text or text.strip() == "null":
        return "memory"
    return "crash"


class ScriptRunner:
    """A warm QuickJS context holding one bundle's compiled stages.

    Args:
        bundle: the prepared program.
        limits: per-event limits.

    Raises:
        ScriptError: a stage does not compile (``stage`` names it, ``line`` where known).
    """

    def __init__(self, bundle: Bundle, *, limits: ScriptLimits | None = None) -> None:
        self.bundle = bundle
        self.limits = limits or ScriptLimits()
        self._thread = threading.get_ident()
        self._ctx: Any = None
        self._fresh_context()

    # ------------------------------------------------------------------ lifecycle
    def _fresh_context(self) -> None:
        ctx = quickjs.Context()
        ctx.set_max_stack_size(self.limits.stack_bytes)
        ctx.eval(prelude_source())
        failure: ScriptError | None = None
        for stage in self.bundle.stages:
            try:
                ctx.eval(stage.program)
            except quickjs.JSException as exc:
                failure = ScriptError(stage.name, _first_line(exc), line=_line_of(exc))
                break
        if failure is not None:
            # Free the context here, on its own thread, and raise without the JS exception's
            # traceback: a context kept alive by a traceback in a reference cycle would be
            # freed by the cyclic GC on whatever thread runs it, and QuickJS is thread-confined.
            del ctx
            raise failure
        ctx.eval(f"__memoryLimitMessage = {orjson.dumps(self._memory_message()).decode()};")
        if self.bundle.standard_event:
            ctx.eval("__checkStandardEvent = true;")
        ctx.eval("__seal();")
        ctx.set_time_limit(self.limits.time_s)
        self._ctx = ctx
        self._load = ctx.get("__load")
        self._run = ctx.get("__run")
        self._partial = ctx.get("__partial")
        self._baseline = int(ctx.memory()["memory_used_size"])

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "a QuickJS context is used from a thread other than the one that created it; "
                "this would crash the process, so it is refused"
            )

    # ------------------------------------------------------------------ running
    def run(self, payloads: list[Any], *, trace: bool = False) -> list[ScriptResult]:
        """Run every payload through the bundle's stages; one result per payload, in order."""
        return self.run_json(orjson.dumps(payloads), len(payloads), trace=trace)

    def run_raw(self, bodies: list[bytes], *, trace: bool = False) -> list[ScriptResult]:
        """Like :meth:`run` for payloads that are already JSON documents (message bodies):
        they are spliced into one array without being parsed in Python."""
        return self.run_json(json_array(bodies), len(bodies), trace=trace)

    def run_json(self, array: bytes, count: int, *, trace: bool = False) -> list[ScriptResult]:
        """Run a JSON array of ``count`` payloads. The array must be valid JSON."""
        self._check_thread()
        if self._ctx is None:
            raise RuntimeError("this script runner was closed")
        if count == 0:
            return []
        results: list[ScriptResult] = []
        start = 0
        loaded = False
        text = array.decode()
        while start < count:
            if not loaded:
                self._arm_memory(len(array))
                try:
                    self._load(text)
                except quickjs.JSException:
                    # The whole batch does not fit the limits: fall back to one event at a time.
                    self._fresh_context()
                    return results + self._one_by_one(text, start, count, trace)
                loaded = True
            try:
                results.extend(orjson.loads(self._run(start, trace)))
                return results
            except (quickjs.JSException, quickjs.StackOverflow) as exc:
                kind = _classify(exc)
                try:
                    partial = orjson.loads(self._partial())
                except quickjs.JSException:
                    self._fresh_context()
                    return results + self._one_by_one(text, start, count, trace)
                results.extend(partial["seg"])
                current = int(partial["cur"])
                if kind == "time" and current > start:
                    start = current  # the crossing was slow, not this event: resume at it
                    continue
                results.append({"e": self._limit_error(str(partial["stage"]), kind, exc)})
                start = current + 1
                if kind != "time":
                    self._fresh_context()
                    loaded = False
        return results

    def _one_by_one(self, text: str, start: int, count: int, trace: bool) -> list[ScriptResult]:
        items = orjson.loads(text)
        out: list[ScriptResult] = []
        for index in range(start, count):
            out.extend(self.run_json(orjson.dumps([items[index]]), 1, trace=trace))
        return out

    def _arm_memory(self, incoming: int) -> None:
        # The runtime limit covers everything the context holds; leave room for the parsed
        # batch (generously, 8x its JSON size) plus the per-event allowance.
        self._ctx.set_memory_limit(self._baseline + 8 * incoming + self.limits.memory_bytes)

    def _limit_error(self, stage: str, kind: FailureKind, exc: BaseException) -> dict[str, Any]:
        if kind == "time":
            message = f"time limit of {self.limits.time_s * 1000:g} ms exceeded"
        elif kind == "memory":
            message = self._memory_message()
        else:
            message = f"script runtime failed: {_first_line(exc)}"
        return {"stage": stage, "message": message}

    def _memory_message(self) -> str:
        return f"memory limit of {self.limits.memory_bytes / (1024 * 1024):g} MB exceeded"

    def close(self) -> None:
        """Release the QuickJS context now, on the owning thread (also on eviction)."""
        self._check_thread()
        self._load = self._run = self._partial = None
        self._ctx = None

    def memory_used(self) -> int:
        """Bytes the context holds now (for metrics)."""
        self._check_thread()
        return int(self._ctx.memory()["memory_used_size"])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _line_of(exc: BaseException) -> int | None:
    for line in str(exc).splitlines():
        marker = "<input>:"
        if marker in line:
            digits = line.split(marker, 1)[1].rstrip(")").split(":")[0]
            if digits.isdigit():
                return int(digits)
    return None
