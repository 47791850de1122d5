"""No script, payload or result may break a batch.

Each case puts one bad event among good ones and runs the batch both in this thread
(ScriptRunner) and through the crash-isolated script host (HostedRunner): the run returns one
result per payload, in order, the bad event fails with a message naming what was wrong, and
every other event (including those after the bad one, and the next batch) keeps its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import quickjs

from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.batch import split_array
from eventray.pipeline.scripts.bundle import bundle_for_template
from eventray.pipeline.scripts.host import HostedRunner, ScriptHost
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.runner import ScriptResult, ScriptRunner, check_engine

# The transform echoes the payload's `c` into its result; `payload.evil` marks the bad event.
TRANSFORM = (
    "result = { eventType: 'reading', eventId: String(payload.id), data: { c: payload.c },"
    " created: '2026-01-01T00:00:00Z' };\n"
)
TIME_S = 0.25
# In this thread the 20 MB result fits the memory limit and meets the size check; in the host
# (default memory) serialising it runs out of memory first: both must say how big it was.
THREAD_LIMITS = ScriptLimits(time_s=TIME_S, memory_bytes=128 * 1024 * 1024)
HOST_LIMITS = ScriptLimits(time_s=TIME_S)

Run = Callable[[AssetTemplate, list[bytes]], list[ScriptResult]]


@pytest.fixture(scope="module")
def host() -> Iterator[ScriptHost]:
    shared = ScriptHost(HOST_LIMITS)
    yield shared
    shared.close()


@pytest.fixture(params=["thread", "host"])
def run(request: pytest.FixtureRequest, host: ScriptHost) -> Run:
    """Runs raw bodies through a template, then a second batch, returning both results."""
    runners: dict[str, Any] = {}

    def go(template: AssetTemplate, bodies: list[bytes]) -> list[ScriptResult]:
        bundle = bundle_for_template(template)
        runner = runners.get(bundle.key)
        if runner is None:
            runner = (
                ScriptRunner(bundle, limits=THREAD_LIMITS)
                if request.param == "thread"
                else HostedRunner(host, f"{request.node.name}/{bundle.key}", bundle)
            )
            runners[bundle.key] = runner
        results: list[ScriptResult] = runner.run_raw(bodies)
        return results

    return go


def template(extra: str, name: str = "t") -> AssetTemplate:
    return AssetTemplate(id=name, orgId="acme", name=name, scriptConversion=TRANSFORM + extra)


GOOD_THEN_BAD = [b'{"id": 1, "c": 1}', b'{"id": 2, "c": 2, "evil": true}', b'{"id": 3, "c": 3}']
NEXT_BATCH = [b'{"id": 4, "c": 4}', b'{"id": 5, "c": 5}']


def outcome(result: ScriptResult) -> Any:
    if "e" in result:
        return result["e"]
    return (result["r"]["eventId"], result["r"]["data"].get("c"))


def assert_only_bad_fails(
    run: Run, tpl: AssetTemplate, message: str, *, line: int | None = None
) -> None:
    outs = run(tpl, GOOD_THEN_BAD)
    error = {"stage": "transform", "message": message}
    if line is not None:
        error["line"] = line
    assert [outcome(o) for o in outs] == [("1", 1), error, ("3", 3)]
    assert [outcome(o) for o in run(tpl, NEXT_BATCH)] == [("4", 4), ("5", 5)]


# ---------------------------------------------------------------------- (a) payloads
def test_lone_surrogate_copied_into_a_result_fails_only_that_event(run: Run) -> None:
    bodies = [
        b'{"id": 1, "c": "plain"}',
        b'{"correlation_ids": "\\ud83d", "id": 2, "c": "\\ud83d"}',
        b'{"id": 3, "c": "\\ud83d\\ude00"}',  # a proper pair is fine
    ]
    outs = run(template(""), bodies)
    assert [outcome(o) for o in outs] == [
        ("1", "plain"),
        {
            "stage": "transform",
            "message": "result is not serialisable: lone UTF-16 surrogate in a string at data.c",
        },
        ("3", "\U0001f600"),
    ]


def test_a_body_that_is_not_json_fails_only_its_event(run: Run) -> None:
    outs = run(template(""), [b'{"id": 1, "c": 1}', b'{"id": 2, "c": ', b'{"id": 3, "c": 3}'])
    assert [outcome(o) for o in (outs[0], outs[2])] == [("1", 1), ("3", 3)]
    assert outs[1]["e"]["stage"] == "transform"
    assert outs[1]["e"]["message"].startswith("payload could not be loaded: ")


# ---------------------------------------------------------------------- (b) results
@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "if (payload.evil) { const o = {}; o.self = o; result.data.o = o; }",
            "result is not serialisable: cyclic object",
        ),
        ("if (payload.evil) result.data.big = 10n;", "result is not serialisable: BigInt value"),
        (
            "if (payload.evil) Object.defineProperty(result.data, 'x',"
            " { enumerable: true, get() { throw new Error('boom'); } });",
            "result is not serialisable: Error: boom",
        ),
        (
            "if (payload.evil) result.data.blob = 'x'.repeat(20 * 1024 * 1024);",
            "result of 20.0 MB exceeds the limit of 1 MB",
        ),
    ],
    ids=["cyclic", "bigint", "throwing-getter", "20MB"],
)
def test_unserialisable_result_fails_only_its_event(run: Run, script: str, message: str) -> None:
    assert_only_bad_fails(run, template(script), message)


def test_a_tojson_that_never_returns_is_stopped_by_the_time_limit(run: Run) -> None:
    tpl = template("if (payload.evil) result.data.x = { toJSON() { for (;;) {} } };")
    run(tpl, NEXT_BATCH)  # warm, so the timing below is the batch's own
    start = time.monotonic()
    outs = run(tpl, GOOD_THEN_BAD)
    elapsed = time.monotonic() - start
    assert [outcome(o) for o in outs] == [
        ("1", 1),
        {
            "stage": "transform",
            "message": f"time limit of {TIME_S * 1000:g} ms exceeded while serialising the result",
        },
        ("3", 3),
    ]
    # The limit is CPU time: at most twice the per-event limit (a crossing that was slow as a
    # whole gets one retry), plus whatever a busy machine adds in wall-clock time.
    assert elapsed < 2 * TIME_S + 5.0
    assert [outcome(o) for o in run(tpl, NEXT_BATCH)] == [("4", 4), ("5", 5)]


# A pattern with nested quantifiers backtracks ~2^n times on n letters that fail to match at
# the end: 40 letters are hours of work. The time limit must stop it like any other script
# work (QuickJS before 2025-04-26 never checked it inside a regular expression: the event ran
# until the host's watchdog killed the child, 30 s per event, the lane stalled meanwhile).
EVIL_TEXT = '("a".repeat(40) + "!")'


@pytest.mark.parametrize(
    "script",
    [
        f"/(a+)+$/.test({EVIL_TEXT});",
        f"new RegExp('(a|aa)+$').exec({EVIL_TEXT});",
        f"{EVIL_TEXT}.match(/(a*)*b/);",
        f"[...{EVIL_TEXT}.matchAll(/(a+)+b/g)];",
        f"{EVIL_TEXT}.replace(/(a+)+b/g, 'x');",
        f"{EVIL_TEXT}.replaceAll(/(a+)+b/g, () => 'x');",
        f"{EVIL_TEXT}.split(/(a+)+b/);",
        f"{EVIL_TEXT}.search(/(a+)+b/);",
        f"$mv.string().pattern('^(a+)+$').validate({EVIL_TEXT});",
        f"try {{ /(a+)+$/.test({EVIL_TEXT}); }} catch (e) {{ result.data.c = 'caught'; }}",
    ],
    ids=[
        "literal.test",
        "RegExp.exec",
        "match",
        "matchAll",
        "replace",
        "replaceAll",
        "split",
        "search",
        "mv.pattern",
        "try-catch",
    ],
)
def test_a_regex_that_backtracks_catastrophically_is_stopped_by_the_time_limit(
    run: Run, host: ScriptHost, script: str
) -> None:
    tpl = template(f"if (payload.evil) {{ {script} }}")
    run(tpl, NEXT_BATCH)  # warm, so the timing below is the batch's own
    crashes = host.stats.crashes
    start = time.monotonic()
    outs = run(tpl, GOOD_THEN_BAD)
    elapsed = time.monotonic() - start
    assert [outcome(o) for o in outs] == [
        ("1", 1),
        {"stage": "transform", "message": f"time limit of {TIME_S * 1000:g} ms exceeded"},
        ("3", 3),
    ]
    # Within the limit (twice it at most, see above), far below the host's 30 s watchdog: the
    # engine interrupted the regex, the child was neither killed nor replaced.
    assert elapsed < 2 * TIME_S + 5.0
    assert host.stats.crashes == crashes
    assert [outcome(o) for o in run(tpl, NEXT_BATCH)] == [("4", 4), ("5", 5)]


def test_a_crafted_payload_against_a_careless_regex_fails_only_its_event(
    run: Run, host: ScriptHost
) -> None:
    """The template is the tenant's own and looks harmless; the payload is someone else's."""
    tpl = template(r"result.data.c = /^(\w+\s?)*$/.test(payload.name) ? 'words' : 'other';")
    bodies = [
        b'{"id": 1, "name": "cold room 4"}',
        b'{"id": 2, "name": "' + b"aaaa " * 12 + b'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"}',
        b'{"id": 3, "name": "door!"}',
    ]
    crashes = host.stats.crashes
    start = time.monotonic()
    outs = run(tpl, bodies)
    assert time.monotonic() - start < 2 * TIME_S + 5.0
    assert [outcome(o) for o in outs] == [
        ("1", "words"),
        {"stage": "transform", "message": f"time limit of {TIME_S * 1000:g} ms exceeded"},
        ("3", "other"),
    ]
    assert host.stats.crashes == crashes


def test_runners_refuse_an_engine_whose_time_limit_misses_regular_expressions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_engine.__wrapped__()  # the installed engine interrupts one (uncached: runs again)

    class RunsItToTheEnd:  # as QuickJS 2021-03-27 (the `quickjs` package) did
        def set_time_limit(self, seconds: float) -> None:
            pass

        def eval(self, code: str) -> bool:
            return False

    monkeypatch.setattr(quickjs, "Context", RunsItToTheEnd)
    with pytest.raises(RuntimeError, match="cannot interrupt a regular expression"):
        check_engine.__wrapped__()


def test_a_payload_nested_too_deeply_fails_only_its_event(run: Run) -> None:
    deep = b'{"id": 2, "c": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    outs = run(template(""), [b'{"id": 1, "c": 1}', deep, b'{"id": 3, "c": 3}'])
    assert [outcome(o) for o in outs] == [
        ("1", 1),
        {"stage": "transform", "message": "payload could not be loaded: nested too deeply"},
        ("3", 3),
    ]


def test_max_result_bytes_is_a_limit_in_utf8_bytes() -> None:
    limits = ScriptLimits(max_result_bytes=200)
    runner = ScriptRunner(bundle_for_template(template("")), limits=limits)
    small, large = runner.run([{"id": 1, "c": "x"}, {"id": 2, "c": "é" * 60}])
    assert "r" in small
    # 60 two-byte characters: the JSON has fewer than 200 characters but more than 200 bytes.
    size = len(
        orjson.dumps(
            {
                "eventType": "reading",
                "eventId": "2",
                "data": {"c": "é" * 60},
                "created": "2026-01-01T00:00:00Z",
            }
        )
    )
    assert size > 200
    assert large["e"]["message"] == f"result of {size} bytes exceeds the limit of 200 bytes"
    with pytest.raises(ValueError):
        ScriptLimits(max_result_bytes=0)


# ---------------------------------------------------------------------- (c) overrides
@pytest.mark.parametrize(
    "script",
    [
        "if (payload.evil) { JSON.parse = function () { throw new Error('parse hijacked'); };"
        " JSON.parse('{}'); }",
        "if (payload.evil) { JSON.stringify = function () { return '\"forged\"'; }; }",
        "if (payload.evil) { Array.prototype.push = function () {"
        " throw new Error('push hijacked'); }; [].push(1); }",
        "if (payload.evil) { JSON = null; Math.max = null; Object.prototype.forged = 1; }",
    ],
    ids=["JSON.parse", "JSON.stringify", "Array.prototype.push", "JSON-Math-Object.prototype"],
)
def test_built_ins_cannot_be_overridden(run: Run, script: str) -> None:
    """The intrinsics are frozen before any event: a template's assignment to one is ignored
    (stage bodies are sloppy code), so the event gets its own result and no later event, of
    this template or another, sees a changed built-in."""
    tpl = template(script)
    assert [outcome(o) for o in run(tpl, GOOD_THEN_BAD)] == [("1", 1), ("2", 2), ("3", 3)]
    assert [outcome(o) for o in run(tpl, NEXT_BATCH)] == [("4", 4), ("5", 5)]


def test_strict_code_is_told_that_a_built_in_is_frozen(run: Run) -> None:
    script = "if (payload.evil) { (function () { 'use strict'; Math.max = null; })(); }"
    outs = run(template(script), GOOD_THEN_BAD)
    assert outcome(outs[0]) == ("1", 1) and outcome(outs[2]) == ("3", 3)
    assert outs[1]["e"]["message"].startswith("TypeError:"), outs[1]


def test_a_write_to_a_built_in_does_not_reach_the_next_event(run: Run) -> None:
    """The probe's finding: one event set a value on Object.prototype and a later event of
    another asset (the same template, so the same context) read it."""
    script = (
        "if (payload.evil) { Object.prototype.leak = 'x'; Math.leak = 'y'; }\n"
        "result.data.c = [({}).leak, Math.leak].join('|');"
    )
    outs = run(template(script), GOOD_THEN_BAD + NEXT_BATCH)
    assert [o["r"]["data"]["c"] for o in outs] == ["|"] * 5


def test_overriding_the_runtime_s_helpers_changes_nothing_else(run: Run) -> None:
    # Every helper name the runtime ever had, and its current entry points.
    script = (
        "if (payload.evil) { __run = __load = __runOne = __err = __partial = __seal ="
        " __restoreGlobals = __stageScript = __stageCodec = __codecInput = __lineOf ="
        ' __eventray = function () { return \'[{"r":"forged"}]\'; };'
        " throw new Error('helpers replaced'); }"
    )
    assert_only_bad_fails(run, template(script), "Error: helpers replaced", line=2)


def test_the_runtime_is_out_of_reach() -> None:
    names = "Object.getOwnPropertyNames(globalThis).filter(n => n.startsWith('__')).join()"
    probe = (
        f"result.data.c = [typeof __eventray, typeof __run, typeof __load, typeof __mvh, {names}];"
    )
    [out] = ScriptRunner(bundle_for_template(template(probe))).run([{"id": 1}])
    quickjs_own = quickjs.Context().eval(names)  # what QuickJS itself defines
    assert out["r"]["data"]["c"] == ["undefined"] * 4 + [quickjs_own]


def test_mv_is_read_only() -> None:
    script = (
        "$mv = null; $mv.number = null; result.data.c = $mv.number().validate('x').error.message;"
    )
    [out] = ScriptRunner(bundle_for_template(template(script))).run([{"id": 1}])
    assert out["r"]["data"]["c"] == '"value" must be a number'


def test_swapping_the_global_prototype_does_not_keep_globals() -> None:
    script = (
        "if (payload.evil) Object.setPrototypeOf(globalThis, {});\n"
        "leaked = (typeof leaked === 'undefined' ? 0 : leaked) + 1; result.data.c = leaked;"
    )
    outs = ScriptRunner(bundle_for_template(template(script))).run(
        [{"id": 1}, {"id": 2, "evil": True}, {"id": 3}, {"id": 4}]
    )
    assert [o["r"]["data"]["c"] for o in outs] == [1, 1, 1, 1]


@pytest.mark.parametrize("where", ["thread", "host"])
def test_payloads_run_from_python_may_hold_lone_surrogates(where: str, host: ScriptHost) -> None:
    bundle = bundle_for_template(template(""))
    runner = ScriptRunner(bundle) if where == "thread" else HostedRunner(host, "py", bundle)
    outs = runner.run([{"id": 1, "c": "ok"}, {"id": 2, "c": "\ud83d"}, {"id": 3, "c": {1, 2}}])
    assert outcome(outs[0]) == ("1", "ok")
    assert outs[1]["e"]["message"].startswith("result is not serialisable: lone UTF-16")
    assert outs[2]["e"]["message"].startswith("payload is not JSON: ")


# ---------------------------------------------------------------------- runtime faults
# Nothing a script does can make the runtime's output malformed; these simulate a broken
# runtime to check that the runner still answers once per payload, narrowing without recursion.
def test_output_with_too_few_results_is_run_again_one_event_at_a_time() -> None:
    runner = ScriptRunner(bundle_for_template(template("")))
    real_run = runner._run
    runner._run = lambda *args: '{"r":"forged"}'  # one result for three payloads
    outs = runner.run([{"id": 1, "c": 1}, {"id": 2, "c": 2}, {"id": 3, "c": 3}])
    assert [outcome(o) for o in outs] == [("1", 1), ("2", 2), ("3", 3)]
    assert runner._run is not real_run  # the rebuilt context has its own entry points


def test_an_interrupt_without_a_readable_partial_narrows_to_halves() -> None:
    runner = ScriptRunner(bundle_for_template(template("")), limits=ScriptLimits(time_s=0.2))
    calls: list[tuple[Any, ...]] = []

    def interrupted(*args: Any) -> str:
        calls.append(args)
        raise quickjs.JSException("InternalError: interrupted")

    runner._run = interrupted
    runner._partial = lambda: "not a partial"
    outs = runner.run([{"id": i, "c": i} for i in range(1, 5)])
    assert [outcome(o) for o in outs] == [(str(i), i) for i in range(1, 5)]
    assert len(calls) == 1  # the rebuilt context ran the halves


def test_host_output_with_too_few_results_is_run_again_one_event_at_a_time(
    host: ScriptHost,
) -> None:
    runner = HostedRunner(host, "too-few", bundle_for_template(template("", name="few")))
    real = host._run_once
    state = {"broken": True}

    def once(*args: Any) -> bytes:
        if state.pop("broken", False):
            return b'[{"r":"forged"}]'
        return real(*args)

    host._run_once = once  # type: ignore[method-assign]
    try:
        outs = runner.run([{"id": 1, "c": 1}, {"id": 2, "c": 2}])
    finally:
        del host._run_once
    assert [outcome(o) for o in outs] == [("1", 1), ("2", 2)]


def test_a_batch_splits_into_its_payloads_without_parsing_them() -> None:
    array = b' [1, "a,]\\"}", {"b": [2, {"c": "\\ud83d"}]}, [], nul] '
    assert split_array(array) == [
        b"1",
        b'"a,]\\"}"',
        b'{"b": [2, {"c": "\\ud83d"}]}',
        b"[]",
        b"nul",
    ]
    assert split_array(b"[]") == []
    assert split_array(b'[1, {"a": 2]') is None
    assert split_array(b"{}") is None


# ---------------------------------------------------------------------- (d) memory per event
def test_the_memory_limit_is_per_event_whatever_the_batch_s_size() -> None:
    """The probe: an event in a batch of 1,000 bodies of 200 KB could allocate 1,388 MB, since
    the limit left room for the whole parsed batch. Payloads now load in windows of a quarter
    of the limit, and each event gets the limit on top of what is loaded: the same allocation
    fails in a big batch as in a small one, and a modest one succeeds in both."""
    limits = ScriptLimits(memory_bytes=8 * 1024 * 1024)
    script = (
        "var n = payload.alloc || 0, a = [];\n"
        "for (var i = 0; i < n; i++) a.push({i: i, s: 'x' + i});\n"
        "result.data.c = a.length;"
    )
    runner = ScriptRunner(bundle_for_template(template(script)), limits=limits)
    pad = "p" * 100_000

    def batch(size: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = [{"id": i, "pad": pad} for i in range(size)]
        events[size // 2]["alloc"] = 400_000  # ~40 MB of objects: far over 8 MB
        events[size // 2 + 1]["alloc"] = 10_000  # ~1 MB: within it
        return events

    for size in (4, 200):  # 0.4 MB and 20 MB of payloads
        outs = runner.run(batch(size))
        assert outs[size // 2]["e"]["message"].startswith("memory limit of 8 MB exceeded"), size
        assert outs[size // 2 + 1]["r"]["data"]["c"] == 10_000
        assert sum("e" in o for o in outs) == 1
