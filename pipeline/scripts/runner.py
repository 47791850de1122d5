"""Runs one bundle over batches of payloads inside one QuickJS context.

QuickJS contexts are thread-confined: a context used from a thread other than its creator
segfaults (DESIGN.md). A :class:`ScriptRunner` therefore remembers its creating thread and
refuses calls from any other; script-executor actors are single-threaded for the same reason.

One batch costs a handful of Python->JS crossings, not one per event: the batch is handed over
as one JSON array, the JS loop runs every event with a try/catch around its stages and around
the serialising of its result, and the results come back as one string (``results.py``).
Limits are per event even so:

* a throw, a missing ``result``, a deep recursion or a result that cannot be serialised (cyclic,
  BigInt, a throwing getter, too big) is caught inside JS and fails that event;
* a time-limit interrupt (in the interpreter or in a regular expression, see
  :func:`check_engine`) cannot be caught in JS, so the runner reads how far the loop got
  (``partial``), fails the event that was running (if it alone used the whole budget, i.e. it
  was the first of its crossing) or simply resumes at it (the crossing as a whole was slow);
* out-of-memory fails the running event and the context is rebuilt from the bundle, since
  QuickJS gives no guarantee about a runtime that ran out of memory.

Whatever a script, a payload or a result does, a run returns one result per payload, in order:
output that is not exactly the expected results (which the runtime's design rules out, but a
broken runtime would produce) makes the run narrow, in halves down to single events, each part
in a rebuilt context; a loop over a work list, not recursion.
"""

from __future__ import annotations

import importlib.resources
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import orjson
import quickjs

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.scripts.batch import PayloadBatch, json_array, run_each_encoded
from eventray.pipeline.scripts.bundle import Bundle
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.results import (
    CRASH_STAGE,
    MALFORMED,
    SEPARATOR,
    ScriptResult,
    decode_results,
    error_text,
    looks_joined,
    malformed,
    well_formed,
)

__all__ = ["ScriptResult", "ScriptRunner", "check_engine", "json_array", "prelude_source"]


@cache
def prelude_source() -> str:
    """The JS runtime every context starts with."""
    return (
        importlib.resources.files("eventray.pipeline.scripts") / "js" / "prelude.js"
    ).read_text()


# A pattern that backtracks catastrophically: ~2^n steps for n letters "a" (22: ~0.35 s of CPU
# where nothing interrupts it, ~1 ms where the limit below does).
_REGEX_PROBE = '/(a+)+$/.test("' + "a" * 22 + 'b")'


@cache
def check_engine() -> None:
    """Refuses an engine whose time limit cannot interrupt a regular expression.

    The limit is enforced through QuickJS's interrupt handler, which the JavaScript
    interpreter polls; QuickJS's regex engine polls it only since QuickJS 2025-04-26 (and in
    QuickJS-ng). Under an older engine, such as the `quickjs` package's QuickJS 2021-03-27, one
    template's regex could backtrack for minutes, past every limit, stalling the lane and
    every tenant on it. Checked once per process, by running one: a few milliseconds.

    Raises:
        RuntimeError: the installed engine ran the probe to its end.
    """
    ctx = quickjs.Context()
    ctx.set_time_limit(0.001)
    try:
        ctx.eval(_REGEX_PROBE)
    except quickjs.JSException as exc:
        if "interrupted" in str(exc):
            return
        raise
    raise RuntimeError(
        "the installed QuickJS cannot interrupt a regular expression, so the script time limit "
        "would not bound one: install quickjs-ng (after `pip uninstall quickjs quickjs-ng`, "
        "which share a module; `make install` does both)"
    )


FailureKind = Literal["time", "memory", "crash"]
_JS_ERRORS = (quickjs.JSException, quickjs.StackOverflow)


def _classify(exc: BaseException) -> FailureKind:
    text = str(exc)
    if "interrupted" in text:
        return "time"
    if "out of memory" in text or text.strip() == "null":
        return "memory"
    return "crash"


@dataclass(frozen=True, slots=True)
class _Partial:
    """How far an interrupted crossing got: ``done`` results (joined), the running event's
    stage, and what it was doing ("event", "serialise", or "join" once every event had run)."""

    done: int
    joined: str
    stage: str
    phase: str


class ScriptRunner:
    """A warm QuickJS context holding one bundle's compiled stages.

    Args:
        bundle: the prepared program.
        limits: per-event limits.

    Raises:
        ScriptError: a stage does not compile (``stage`` names it, ``line`` where known).
    """

    def __init__(self, bundle: Bundle, *, limits: ScriptLimits | None = None) -> None:
        check_engine()
        self.bundle = bundle
        self.limits = limits or ScriptLimits()
        self.stage_names = tuple(stage.name for stage in bundle.stages)
        self._first_stage = self.stage_names[0] if self.stage_names else CRASH_STAGE
        self._thread = threading.get_ident()
        self._ctx: Any = None
        self._load: Any = None
        self._run: Any = None
        self._partial: Any = None
        self._loaded: tuple[int, int] | None = None
        self._fresh_context()

    # ------------------------------------------------------------------ lifecycle
    def _fresh_context(self) -> None:
        self._ctx = self._load = self._run = self._partial = None
        self._loaded = None
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
        # The entry points are taken before sealing, which removes them from the global object.
        load, run, partial = (ctx.eval(f"__eventray.{name}") for name in ("load", "run", "partial"))
        options = {
            "memoryMessage": self._memory_message(),
            "standardEvent": self.bundle.standard_event,
            "maxResultBytes": self.limits.max_result_bytes,
        }
        ctx.eval("__eventray.seal")(orjson.dumps(options).decode())
        ctx.set_time_limit(self.limits.time_s)
        self._ctx, self._load, self._run, self._partial = ctx, load, run, partial
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
        try:
            array = orjson.dumps(payloads)
        except TypeError:
            return run_each_encoded(
                payloads, lambda bodies: self.run_raw(bodies, trace=trace), self._first_stage
            )
        return self.run_json(array, len(payloads), trace=trace)

    def run_raw(self, bodies: list[bytes], *, trace: bool = False) -> list[ScriptResult]:
        """Like :meth:`run` for payloads that are already JSON documents (message bodies):
        they are spliced into one array without being parsed in Python."""
        return self._decoded(json_array(bodies), len(bodies), trace, list(map(len, bodies)))

    def run_json(self, array: bytes, count: int, *, trace: bool = False) -> list[ScriptResult]:
        """Run a JSON array of ``count`` payloads."""
        return self._decoded(array, count, trace, None)

    def _decoded(
        self, array: bytes, count: int, trace: bool, lengths: list[int] | None
    ) -> list[ScriptResult]:
        text = self.run_text(array, count, trace=trace, lengths=lengths)
        decoded = decode_results(text, count, self.stage_names)
        if decoded is not None:
            return decoded
        # Not one result per payload (a runtime fault, not anything a script can cause): run
        # each payload alone in a rebuilt context.
        self._fresh_context()
        elements = PayloadBatch(array, count, lengths).elements()
        if elements is None:
            return [malformed() for _ in range(count)]
        out: list[ScriptResult] = []
        for element in elements:
            one = decode_results(
                self.run_text(json_array([element]), 1, trace=trace), 1, self.stage_names
            )
            out.append(one[0] if one is not None else malformed())
        return out

    def run_text(
        self, array: bytes, count: int, *, trace: bool = False, lengths: list[int] | None = None
    ) -> str:
        """The results of a JSON array of ``count`` payloads as one JSON array text, not yet
        decoded (the script host passes it to its parent as is). ``lengths``, the lengths of
        the array's elements when :func:`json_array` made it, keep narrowing exact even around
        a body that is not JSON."""
        self._check_thread()
        if self._ctx is None:
            raise RuntimeError("this script runner was closed")
        if count == 0:
            return "[]"
        self._loaded = None  # what is loaded belongs to an earlier batch
        chunks = [
            chunk for chunk in self._execute(PayloadBatch(array, count, lengths), trace) if chunk
        ]
        return "[" + (chunks[0] if len(chunks) == 1 else SEPARATOR.join(chunks)) + "]"

    def _execute(self, batch: PayloadBatch, trace: bool) -> list[str]:
        """Each range's joined results, in order. A range whose payloads cannot be loaded is
        retried one payload at a time, one whose output is malformed in halves; the work list
        replaces recursion."""
        chunks: list[str] = []
        pending = self._windows(batch)
        while pending:
            lo, hi = pending.pop()
            failure = self._ensure_loaded(batch, lo, hi)
            if failure is not None:
                if hi - lo == 1:
                    chunks.append(
                        error_text(self._first_stage, f"payload could not be loaded: {failure}")
                    )
                else:
                    # Straight to single payloads, not halves: a payload that alone takes the
                    # whole time limit to parse then costs that once, not once per level.
                    pending.extend((i, i + 1) for i in range(hi - 1, lo - 1, -1))
                continue
            base = self._loaded[0] if self._loaded else 0
            try:
                joined = self._run(lo - base, hi - base, trace, not pending)
            except _JS_ERRORS as exc:
                chunks.extend(self._after_interrupt(pending, lo, hi, exc))
                continue
            if looks_joined(joined):
                chunks.append(joined)
                if not pending:
                    self._loaded = None  # the runtime dropped the batch
            else:
                self._fresh_context()
                chunks.extend(self._narrow(pending, lo, hi, MALFORMED))
        return chunks

    def _ensure_loaded(self, batch: PayloadBatch, lo: int, hi: int) -> str | None:
        """Loads a range of payloads covering ``lo..hi-1`` unless one is loaded; returns why
        not, or None."""
        if self._loaded is not None and self._loaded[0] <= lo and hi <= self._loaded[1]:
            return None
        self._loaded = None
        text = batch.text(lo, hi)
        if text is None:
            return "not valid UTF-8 JSON" if batch.elements() is not None else "not a JSON document"
        self._arm_memory(len(text))
        try:
            loaded = self._load(text)
            self._arm_events(len(text))
        except _JS_ERRORS as exc:
            if isinstance(exc, quickjs.StackOverflow):  # how JSON.parse meets deep nesting
                return "nested too deeply"
            if str(exc).startswith("SyntaxError"):
                return f"not valid JSON ({_first_line(exc)})"
            self._fresh_context()  # it may have run out of memory
            kind = _classify(exc)
            return _first_line(exc) if kind == "crash" else self._limit_message(kind, exc, "")
        if loaded != hi - lo:
            return "the batch is not a JSON array of its payloads"
        self._loaded = (lo, hi)
        return None

    def _narrow(self, pending: list[tuple[int, int]], lo: int, hi: int, message: str) -> list[str]:
        """A range that failed as a whole: a single event gets ``message``, a longer range is
        queued again as two halves."""
        if hi - lo == 1:
            return [error_text(self._first_stage, message)]
        mid = (lo + hi) // 2
        pending.append((mid, hi))
        pending.append((lo, mid))
        return []

    def _after_interrupt(
        self, pending: list[tuple[int, int]], lo: int, hi: int, exc: BaseException
    ) -> list[str]:
        kind = _classify(exc)
        partial = self._read_partial(hi - lo)
        if partial is None:
            self._fresh_context()
            return self._narrow(pending, lo, hi, self._limit_message(kind, exc, ""))
        out = [partial.joined]
        if kind != "time":
            self._fresh_context()
        if partial.phase == "join":  # every event ran; only joining their results failed
            return out
        current = lo + partial.done
        if kind == "time" and current > lo:
            # The crossing was slow, not this event: resume at it, with its payload parsed
            # afresh (the interrupted run may have changed the loaded one).
            self._loaded = None
            pending.append((current, hi))
            return out
        message = self._limit_message(kind, exc, partial.phase)
        out.append(error_text(partial.stage or self._first_stage, message))
        if current + 1 < hi:
            pending.append((current + 1, hi))
        return out

    def _read_partial(self, size: int) -> _Partial | None:
        try:
            raw = self._partial()
            head, _, joined = raw.partition("\n")
            info = orjson.loads(head)
            done, stage, phase = int(info["n"]), str(info["stage"]), str(info["phase"])
        except (*_JS_ERRORS, AttributeError, TypeError, ValueError, KeyError):
            return None
        expected_done = size if phase == "join" else done
        if not 0 <= done <= size or done != expected_done or not well_formed(joined, done):
            return None
        if phase != "join" and done == size:
            return None
        return _Partial(done=done, joined=joined, stage=stage, phase=phase)

    def _windows(self, batch: PayloadBatch) -> list[tuple[int, int]]:
        """The batch as ranges of at most :meth:`window_bytes` of JSON each (every range holds
        one payload at least), last first: the work list pops from its end."""
        limit = self.window_bytes
        if len(batch.array) <= limit or batch.count == 1:
            return [(0, batch.count)]
        elements = batch.elements()
        if elements is None:  # cannot be told apart: the whole, which narrows on failure
            return [(0, batch.count)]
        windows, start, size = [], 0, 0
        for i, element in enumerate(elements):
            if i > start and size + len(element) > limit:
                windows.append((start, i))
                start, size = i, 0
            size += len(element) + 1
        windows.append((start, batch.count))
        return windows[::-1]

    @property
    def window_bytes(self) -> int:
        """The most payload JSON loaded at once: a quarter of the per-event memory limit."""
        return max(self.limits.memory_bytes // 4, 1)

    def _arm_memory(self, incoming: int) -> None:
        # While the payloads load, the limit leaves room for their parsed form (generously,
        # 8x their JSON size).
        self._ctx.set_memory_limit(self._baseline + 8 * incoming + self.limits.memory_bytes)

    def _arm_events(self, incoming: int) -> None:
        # Once loaded, what the context holds is the baseline of the events: each may allocate
        # the per-event allowance on top, plus room for the results the range gathers (about
        # its input, at most a quarter of the allowance: the window size). An event can so use
        # its limit and at most 25% more, whatever the size of the batch.
        used = int(self._ctx.memory()["memory_used_size"])
        self._ctx.set_memory_limit(used + self.limits.memory_bytes + incoming)

    def _limit_message(self, kind: FailureKind, exc: BaseException, phase: str) -> str:
        if kind == "time":
            message = f"time limit of {self.limits.time_s * 1000:g} ms exceeded"
        elif kind == "memory":
            message = self._memory_message()
        else:
            message = f"script runtime failed: {_first_line(exc)}"
        return message + (" while serialising the result" if phase == "serialise" else "")

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
