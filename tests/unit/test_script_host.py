"""The script host: QuickJS in a child process, so a native crash fails one event, not the lane.

These tests start real child processes and crash them for real (a SIGSEGV from QuickJS itself,
or a SIGKILL from outside); nothing is simulated.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.bundle import bundle_for_template
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.host import ScriptHost
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.runner import ScriptRunner

TRANSFORM = (
    "result = { eventType: 'reading', eventId: String(payload.id), data: { t: payload.t },"
    " created: '2026-01-01T00:00:00Z' };"
)
BOMB = "let a = []; while (true) a.push('x'.repeat(4096) + a.length);"
RECURSE = "(function f(n) { return f(n + 1) + 1; })(0);"


def template(processor: str = "result = payload;", **scripts: Any) -> AssetTemplate:
    return AssetTemplate(
        id="tpl",
        orgId="acme",
        name="t",
        scriptProcessor=processor,
        scriptConversion=TRANSFORM,
        **scripts,
    )


@pytest.fixture
def host_factory() -> Iterator[Any]:
    hosts: list[ScriptHost] = []

    def make(limits: ScriptLimits | None = None) -> ScriptHost:
        hosts.append(ScriptHost(limits))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


def ids(outs: list[Any]) -> list[str | None]:
    return [out["r"]["eventId"] if "r" in out else None for out in outs]


def test_results_match_the_in_process_runner(host_factory: Any) -> None:
    tpl = template(
        "result = { id: payload.raw.split(':')[0], t: Number(payload.raw.split(':')[1]) };",
        scriptValidator="if (payload.t > 100) throw new Error('implausible'); result = payload;",
    )
    items = [{"raw": "7:21.5"}, {"raw": "8:900"}, {"raw": "9:-3"}]
    cache = ScriptCache(host=host_factory())
    hosted = cache.runner_for(tpl).run(items)
    assert hosted == ScriptRunner(bundle_for_template(tpl)).run(items)
    assert hosted[1]["e"] == {"stage": "validate", "message": "Error: implausible", "line": 1}


def test_memory_bomb_fails_only_its_event(host_factory: Any) -> None:
    host = host_factory(ScriptLimits(time_s=2.0, memory_bytes=8 * 1024 * 1024))
    cache = ScriptCache(host=host)
    runner = cache.runner_for(template(f"if (payload.evil) {{ {BOMB} }}\nresult = payload;"))
    outs = runner.run([{"id": 1, "t": 1}, {"id": 2, "evil": True}, {"id": 3, "t": 3}])
    assert ids(outs) == ["1", None, "3"]
    # QuickJS either raises its out-of-memory error, or throws null when it cannot even
    # allocate that error, or (for some heap states) crashes; each must end as this event's
    # failure. Which one happens depends on the heap's exact state.
    error = outs[1]["e"]
    out_of_memory = error["stage"] == "decode" and error["message"].startswith(
        "memory limit of 8 MB exceeded"
    )
    crashed = error["stage"] == "script" and "QuickJS runtime crashed" in error["message"]
    assert out_of_memory or crashed, error
    assert ids(runner.run([{"id": 4, "t": 4}])) == ["4"]


def test_native_crash_is_isolated_to_the_event_that_causes_it(host_factory: Any) -> None:
    # A stack limit far above the real C stack switches off QuickJS's own check, so deep
    # recursion overruns the child's C stack: a genuine, deterministic SIGSEGV.
    host = host_factory(ScriptLimits(stack_bytes=1 << 30))
    runner = ScriptCache(host=host).runner_for(
        template(f"if (payload.evil) {{ {RECURSE} }}\nresult = payload;")
    )
    first_pid = host.pid
    outs = runner.run([{"id": 1, "t": 1}, {"id": 2, "evil": True}, {"id": 3, "t": 3}])
    assert ids(outs) == ["1", None, "3"]
    assert outs[1]["e"]["stage"] == "script"
    assert "SIGSEGV" in outs[1]["e"]["message"], outs[1]
    assert host.stats.crashes == 2  # the batch, then the event alone
    assert host.stats.isolated_reruns == 1
    assert host.pid != first_pid
    assert ids(runner.run([{"id": 4, "t": 4}])) == ["4"]  # recompiled in the new child


def test_a_child_killed_mid_batch_loses_nothing(host_factory: Any) -> None:
    slow = "const t = Date.now(); while (Date.now() - t < 150) {}\nresult = payload;"
    host = host_factory(ScriptLimits(time_s=5.0))
    runner = ScriptCache(host=host).runner_for(template(slow))
    pid = host.pid
    assert pid is not None
    killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        outs = runner.run([{"id": i, "t": i} for i in range(6)])
    finally:
        killer.cancel()
    assert ids(outs) == [str(i) for i in range(6)]
    assert host.stats.crashes == 1
    assert host.pid != pid


def test_compile_errors_name_stage_and_line(host_factory: Any) -> None:
    cache = ScriptCache(host=host_factory())
    broken = template("result = payload;\nif (payload.x {\n}")
    with pytest.raises(ScriptError) as info:
        cache.runner_for(broken)
    assert (info.value.stage, info.value.line) == ("decode", 2)
    with pytest.raises(ScriptError):  # remembered, not recompiled
        cache.runner_for(broken)
    assert cache.stats.compiles == 1


def test_the_child_exits_by_itself_when_its_pipe_closes(host_factory: Any) -> None:
    host = host_factory()
    ScriptCache(host=host).runner_for(template())
    assert host.close() == "exit code 0"  # not killed: it saw EOF and returned


def test_kill_ends_a_stuck_request_at_once_and_starts_no_other_child(host_factory: Any) -> None:
    """A lane's bounded stop abandons a batch stuck in scripts: the child dies, and the request
    (which would have re-run every event alone in fresh children) ends now."""
    host = host_factory(ScriptLimits(time_s=1.0))
    runner = ScriptCache(host=host).runner_for(template("for (;;) {}"))
    pid, spawns = host.pid, host.stats.spawns
    assert pid is not None
    killer = threading.Timer(0.3, host.kill)
    started = time.monotonic()
    killer.start()
    outs = runner.run([{"id": i} for i in range(20)])  # 20 s of time limits, if left alone
    assert time.monotonic() - started < 2.0
    assert [out["e"]["stage"] for out in outs] == ["script"] * 20
    assert host.stats.spawns == spawns  # no new child
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
