"""The script host: warm QuickJS contexts in a child process, so a native crash costs a respawn.

Why a process and not just a thread: QuickJS's memory limit is not crash-safe. A script that
allocates until it meets the limit usually gets a clean ``out of memory`` exception, but for
some limits and heap states QuickJS itself segfaults on the out-of-memory path (upstream
bellard/quickjs#533 and relatives; we reproduce it here for about 1 limit in 20 with a plain
``a.push('x'.repeat(4096))`` loop). A crash in the lane's own process would take every
partition of that lane down with it and, on redelivery, crash it again. In a child process the
crash is contained: the host sees the pipe close, starts a new child, and re-runs the batch one
event at a time so that only the event that crashes the runtime fails (stage ``script``); every
other event of the batch gets its normal result.

It also buys parallelism: while the child runs JavaScript, the lane's process is free to do its
Python work (rows, rules, acks) on the other core.

Protocol: length-prefixed pickle frames over the child's stdin/stdout; one request, one reply.
A batch goes down as its JSON array and comes back as the results' JSON text exactly as the
JavaScript loop wrote it: the child never parses it, the parent decodes it once. The child exits
when its stdin closes, so it never outlives its parent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, BinaryIO

import orjson

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.scripts.batch import PayloadBatch, json_array, run_each_encoded
from eventray.pipeline.scripts.bundle import Bundle
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.results import CRASH_STAGE, ScriptResult, decode_results, malformed
from eventray.pipeline.scripts.runner import ScriptRunner

__all__ = ["HostStats", "HostedRunner", "ScriptHost"]

_HEADER = struct.Struct("<I")
_PIPE_BYTES = 1 << 20


class _HostDied(Exception):
    """The child process exited (or was killed by the watchdog) during a request."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


@dataclass(slots=True)
class HostStats:
    spawns: int = 0
    crashes: int = 0
    isolated_reruns: int = 0


class ScriptHost:
    """Parent-side handle of one script child process.

    Args:
        limits: per-event limits every context in the child is built with.
        watchdog_s: floor of the time a request may take before the child is presumed hung in
            native code and killed (the per-event QuickJS time limit normally fires long before).
    """

    def __init__(self, limits: ScriptLimits | None = None, *, watchdog_s: float = 30.0) -> None:
        self.limits = limits or ScriptLimits()
        self.watchdog_s = watchdog_s
        self.stats = HostStats()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._loaded: set[str] = set()
        self._killed = False

    # ------------------------------------------------------------------ process
    @property
    def pid(self) -> int | None:
        """The current child's pid (None before the first request)."""
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        # The child imports this package the way the parent did (Ray's working_dir included).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventray.pipeline.scripts.host",
                json.dumps(asdict(self.limits)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for stream in (proc.stdin, proc.stdout):
            _widen_pipe(stream)
        self._proc = proc
        self._loaded = set()
        self.stats.spawns += 1
        return proc

    def _reap(self) -> str:
        proc = self._proc
        self._proc = None
        self._loaded = set()
        if proc is None:
            return "not running"
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def _call(self, message: tuple[Any, ...], timeout_s: float) -> Any:
        if self._killed:
            raise _HostDied("killed by the lane's stop")
        proc = self._proc or self._spawn()
        assert proc.stdin is not None and proc.stdout is not None
        frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_HEADER.pack(len(frame)) + frame)
            proc.stdin.flush()
            deadline = time.monotonic() + timeout_s
            fd = proc.stdout.fileno()
            (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
            reply = pickle.loads(_read_exact(fd, size, deadline))
        except TimeoutError:
            proc.kill()
            self._reap()
            self.stats.crashes += 1
            raise _HostDied(f"hung for more than {timeout_s:g} s and was killed") from None
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self.stats.crashes += 1
            raise _HostDied(self._reap()) from None
        if reply[0] == "error":
            raise RuntimeError(f"script host: {reply[1]}")
        return reply

    def start(self) -> None:
        """Start the child now rather than on the first batch (it takes a moment to import)."""
        with self._lock:
            if self._proc is None:
                self._call(("ping",), self.watchdog_s)

    # ------------------------------------------------------------------ requests
    def load(self, key: str, bundle: Bundle) -> None:
        """Compile ``bundle`` in the child under ``key``.

        Raises:
            ScriptError: a stage does not compile (or compiling crashed the runtime).
        """
        with self._lock:
            self._load(key, bundle)

    def _load(self, key: str, bundle: Bundle) -> None:
        if key in self._loaded:  # emptied whenever the child is replaced
            return
        try:
            reply = self._call(("load", key, bundle.to_bytes()), self.watchdog_s)
        except _HostDied as died:  # _call has already reaped the dead child
            if self._killed:
                raise  # not the script's fault: the request ends as a crash of its events
            raise ScriptError("compile", f"the QuickJS runtime crashed ({died.how})") from None
        if reply[0] == "script_error":
            raise ScriptError(reply[1], reply[2], line=reply[3])
        self._loaded.add(key)

    def run(
        self,
        key: str,
        bundle: Bundle,
        array: bytes,
        count: int,
        *,
        trace: bool = False,
        lengths: list[int] | None = None,
    ) -> list[ScriptResult]:
        """Run a JSON array of ``count`` payloads through ``key``'s stages in the child
        (``lengths``: of the array's elements, when :func:`json_array` made it).

        If the child dies, the batch runs again one event at a time in fresh children: events
        that crash it again fail alone with stage ``script``, the others get their results.
        """
        if count == 0:
            return []
        stages = tuple(stage.name for stage in bundle.stages)
        with self._lock:
            failure: ScriptResult
            try:
                text = self._run_once(key, bundle, array, count, trace, lengths)
                decoded = decode_results(text, count, stages)
                if decoded is not None:
                    return decoded
                # Not one result per payload (a runtime fault): rebuild its context, and run
                # each payload alone.
                self._drop(key)
                failure = malformed()
            except _HostDied as died:
                failure = self._crashed(died)
            if count == 1:
                return [failure]
            self.stats.isolated_reruns += 1
            elements = PayloadBatch(array, count, lengths).elements()
            if elements is None:  # the events cannot be told apart: none can be run alone
                return [failure for _ in range(count)]
            out: list[ScriptResult] = []
            for element in elements:
                try:
                    text = self._run_once(key, bundle, json_array([element]), 1, trace, None)
                    one = decode_results(text, 1, stages)
                    out.append(one[0] if one is not None else malformed())
                except _HostDied as alone:
                    out.append(self._crashed(alone))
            return out

    def _run_once(
        self,
        key: str,
        bundle: Bundle,
        array: bytes,
        count: int,
        trace: bool,
        lengths: list[int] | None,
    ) -> bytes:
        """The results' JSON text as the child's runner wrote it: decoded once, here."""
        self._load(key, bundle)
        budget = self.watchdog_s + 3 * self.limits.time_s * count
        reply = self._call(("run", key, array, count, trace, lengths), budget)
        text: bytes = reply[1]
        return text

    @staticmethod
    def _crashed(died: _HostDied) -> ScriptResult:
        return {
            "e": {
                "stage": CRASH_STAGE,
                "message": (
                    f"the QuickJS runtime crashed while running this event ({died.how}); "
                    "the event was isolated and its script process restarted"
                ),
            }
        }

    def drop(self, key: str) -> None:
        """Free ``key``'s context in the child (eviction or invalidation)."""
        with self._lock:
            self._drop(key)

    def _drop(self, key: str) -> None:
        if key not in self._loaded:
            return
        self._loaded.discard(key)
        with contextlib.suppress(_HostDied):  # a dead child holds no context to free
            self._call(("drop", key), self.watchdog_s)

    def kill(self) -> None:
        """Kill the child now and start no other, from any thread: for a stop that abandons a
        request the child is stuck in (:meth:`close` would wait for the lock that request
        holds). The request ends as a crash of every event, which nobody awaits any more."""
        self._killed = True
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def close(self) -> str:
        """Stop the child: closing its stdin makes it exit. Returns how it ended."""
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                self._proc.stdin.close()
            return self._reap()


class HostedRunner:
    """What :class:`~pipeline.scripts.cache.ScriptCache` hands out when it uses a host: the
    same ``run``/``run_raw`` surface as :class:`ScriptRunner`, executed in the child."""

    def __init__(self, host: ScriptHost, key: str, bundle: Bundle) -> None:
        self.host = host
        self.key = key
        self.bundle = bundle
        host.load(key, bundle)

    def run(self, payloads: list[Any], *, trace: bool = False) -> list[ScriptResult]:
        try:
            array = orjson.dumps(payloads)
        except TypeError:  # e.g. a lone surrogate, which only the standard library escapes
            stage = self.bundle.stages[0].name if self.bundle.stages else CRASH_STAGE
            return run_each_encoded(
                payloads, lambda bodies: self.run_raw(bodies, trace=trace), stage
            )
        return self.host.run(self.key, self.bundle, array, len(payloads), trace=trace)

    def run_raw(self, bodies: list[bytes], *, trace: bool = False) -> list[ScriptResult]:
        return self.host.run(
            self.key,
            self.bundle,
            json_array(bodies),
            len(bodies),
            trace=trace,
            lengths=list(map(len, bodies)),
        )

    def close(self) -> None:
        self.host.drop(self.key)


def _widen_pipe(stream: IO[bytes] | None) -> None:
    # A batch and its results are a few hundred KB: with Linux's default 64 KB pipe, each
    # crossing would block and wake both processes several times.
    if stream is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------- the child
def _serve(limits: ScriptLimits, inp: BinaryIO, out: BinaryIO) -> None:
    runners: dict[str, ScriptRunner] = {}
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return  # the parent closed the pipe (or died): so do we
        (size,) = _HEADER.unpack(head)
        message = pickle.loads(inp.read(size))
        op = message[0]
        reply: tuple[Any, ...]
        try:
            if op == "load":
                _, key, raw = message
                try:
                    runners[key] = ScriptRunner(Bundle.from_bytes(raw), limits=limits)
                    reply = ("ok",)
                except ScriptError as exc:
                    reply = ("script_error", exc.stage, exc.message, exc.line)
            elif op == "run":
                _, key, array, count, trace, lengths = message
                text = runners[key].run_text(array, count, trace=trace, lengths=lengths)
                reply = ("ok", text.encode())
            elif op == "ping":
                reply = ("ok",)
            elif op == "drop":
                runner = runners.pop(message[1], None)
                if runner is not None:
                    runner.close()
                reply = ("ok",)
            else:
                reply = ("error", f"unknown request {op!r}")
        except Exception as exc:  # a bug, not a script failure: report it, keep serving
            reply = ("error", f"{type(exc).__name__}: {exc}")
        frame = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(frame)) + frame)
        out.flush()


def main() -> None:
    """Child entry point: ``python -m eventray.pipeline.scripts.host '<limits json>'``."""
    limits = ScriptLimits(**json.loads(sys.argv[1]))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _serve(limits, sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
