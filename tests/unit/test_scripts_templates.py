"""Template stage scripts: contracts, errors with stage and line, limits, and the $mv helper."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.bundle import bundle_for_template
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.scripts.runner import ScriptRunner

TRANSFORM = (
    "result = { eventType: 'reading', eventId: String(payload.id), data: { t: payload.t },"
    " created: '2026-01-01T00:00:00Z' };"
)


def template(**scripts: Any) -> AssetTemplate:
    fields: dict[str, Any] = {"scriptConversion": TRANSFORM, **scripts}
    return AssetTemplate(id="tpl", orgId="acme", name="t", **fields)


def run(tpl: AssetTemplate, items: list[Any], **kw: Any) -> list[Any]:
    return ScriptRunner(bundle_for_template(tpl), **kw).run(items)


def test_stages_chain_and_result_feeds_next_stage() -> None:
    tpl = template(
        scriptProcessor="result = { id: payload.raw.split(':')[0], t: Number(payload.raw.split(':')[1]) };",
        scriptValidator="if (payload.t > 100) throw new Error('implausible'); result = payload;",
    )
    ok, bad = run(tpl, [{"raw": "7:21.5"}, {"raw": "8:900"}])
    assert ok["r"]["data"] == {"t": 21.5} and ok["r"]["eventId"] == "7"
    assert bad["e"] == {"stage": "validate", "message": "Error: implausible", "line": 1}


def test_error_names_stage_and_user_line() -> None:
    tpl = template(scriptProcessor="const a = 1;\n\nconst b = payload.missing.deeper;\nresult = b;")
    [out] = run(tpl, [{"id": 1}])
    assert out["e"]["stage"] == "decode"
    assert out["e"]["line"] == 3
    assert "TypeError" in out["e"]["message"]


def test_missing_result_fails_event() -> None:
    [out] = run(template(scriptValidator="const x = payload;"), [{"id": 1, "t": 1}])
    assert out["e"] == {
        "stage": "validate",
        "message": "result is undefined: the script must set result",
    }


def test_let_result_and_return_are_accepted() -> None:
    tpl = template(
        scriptProcessor="let result = payload; result.t = 2;", scriptValidator="return payload;"
    )
    [out] = run(tpl, [{"id": 1, "t": 1}])
    assert out["r"]["data"] == {"t": 2}


def test_transform_must_yield_standard_event() -> None:
    tpl = template(
        scriptConversion="result = { eventType: 'x', eventId: '1', data: [], created: 'now' };"
    )
    [out] = run(tpl, [{}])
    assert out["e"] == {"stage": "transform", "message": "Standard Event: data must be an object"}
    tpl = template(
        scriptConversion="result = { eventType: 'x', eventId: '1', data: {}, created: 'soon' };"
    )
    [out] = run(tpl, [{}])
    assert out["e"]["message"] == "Standard Event: created must be an ISO-8601 string"


def test_syntax_error_is_reported_at_compile_with_stage_and_line() -> None:
    tpl = template(scriptValidator="result = payload;\nif (payload.x {\n}")
    with pytest.raises(ScriptError) as info:
        ScriptRunner(bundle_for_template(tpl))
    assert info.value.stage == "validate"
    assert info.value.line == 2
    assert "SyntaxError" in info.value.message


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("while (true) {}", "time limit of 200 ms exceeded"),
        ("(function f(n) { return f(n + 1) + 1; })(0);", "RangeError: Maximum call stack size"),
        ("throw 'plain string';", 'uncaught "plain string"'),
    ],
    ids=["infinite-loop", "deep-recursion", "throw-non-error"],
)
def test_limits_fail_only_the_offending_event(script: str, message: str) -> None:
    # The memory limit is tested through the script host (test_script_host.py) only: QuickJS
    # can segfault on its out-of-memory path, which in-process would kill the test run.
    tpl = template(scriptProcessor=f"if (payload.evil) {{ {script} }}\nresult = payload;")
    limits = ScriptLimits(time_s=0.2, memory_bytes=8 * 1024 * 1024)
    runner = ScriptRunner(bundle_for_template(tpl), limits=limits)
    outs = runner.run([{"id": 1, "t": 1}, {"id": 2, "evil": True}, {"id": 3, "t": 3}])
    assert outs[0]["r"]["eventId"] == "1"
    assert outs[1]["e"]["stage"] == "decode"
    assert message in outs[1]["e"]["message"]
    assert outs[2]["r"]["eventId"] == "3"
    # the executor stays healthy for the next batch
    assert runner.run([{"id": 4, "t": 4}])[0]["r"]["eventId"] == "4"


def test_slow_batch_is_not_mistaken_for_a_slow_event() -> None:
    # Each event takes ~1/3 of the limit: the crossing exceeds the limit, no event does.
    busy = "let s = 0; for (let i = 0; i < payload.n; i++) s += i; result = payload;"
    limits = ScriptLimits(time_s=0.3)
    runner = ScriptRunner(bundle_for_template(template(scriptProcessor=busy)), limits=limits)
    calibrate = runner.run([{"id": 0, "n": 1_000_000}])  # warm
    assert "r" in calibrate[0]
    outs = runner.run([{"id": i, "n": 1_000_000} for i in range(8)])
    assert all("r" in out for out in outs), outs


def test_validate_helper() -> None:
    validator = """
    const schema = $mv.object({
      temperature: $mv.number().required().min(-40).max(85),
      humidity: $mv.number().optional().integer(),
      serial: $mv.string().required().pattern(/^[A-F0-9]{8}$/),
      owner: $mv.string().email(),
      at: $mv.date(),
      tags: $mv.array($mv.string()).max(2),
      ok: $mv.boolean(),
    });
    const { error, value } = schema.validate(payload);
    if (error) throw new Error(error.message);
    result = value;
    """
    tpl = template(scriptValidator=validator)
    good = {
        "id": 1,
        "t": 1,
        "temperature": -20,
        "humidity": 40,
        "serial": "AB12CD34",
        "owner": "ops@example.com",
        "at": "2026-01-01T00:00:00Z",
        "tags": ["a"],
        "ok": True,
    }
    outs = run(
        tpl,
        [
            good,
            {**good, "temperature": -41},
            {**good, "serial": "nope", "humidity": 40.5},
            {"id": 2},
            {
                **good,
                "tags": ["a", 1, "c"],
                "owner": "not-an-email",
                "at": "yesterday",
                "ok": "yes",
            },
        ],
    )
    assert "r" in outs[0]
    assert outs[1]["e"]["message"] == 'Error: "temperature" must be greater than or equal to -40'
    assert outs[2]["e"]["message"] == (
        'Error: "humidity" must be an integer; "serial" must match /^[A-F0-9]{8}$/'
    )
    assert outs[3]["e"]["message"] == 'Error: "temperature" is required; "serial" is required'
    assert outs[4]["e"]["message"] == (
        'Error: "owner" must be a valid email; "at" must be a date; '
        '"tags" length must be less than or equal to 2; "tags[1]" must be a string; '
        '"ok" must be a boolean'
    )


def test_context_refuses_other_threads() -> None:
    runner = ScriptRunner(bundle_for_template(template()))
    errors: list[str] = []  # strings, not exceptions: a traceback would tie the runner into a cycle

    def use() -> None:
        try:
            runner.run([{"id": 1}])
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "other than the one that created it" in errors[0]
    assert runner.run([{"id": 2, "t": 1}])[0]["r"]["eventId"] == "2"  # still fine on its own


def test_trace_returns_each_stage_output() -> None:
    tpl = template(scriptProcessor="result = { id: payload.k, t: 5 };")
    [out] = ScriptRunner(bundle_for_template(tpl)).run([{"k": 9}], trace=True)
    assert out["s"]["decode"] == {"id": 9, "t": 5}
    assert out["s"]["transform"]["eventId"] == "9"


def test_use_strict_directive_is_honoured() -> None:
    tpl = template(scriptProcessor='"use strict";\nundeclared = 1;\nresult = payload;')
    [out] = run(tpl, [{"id": 1, "t": 1}])
    assert out["e"]["stage"] == "decode"
    assert "ReferenceError" in out["e"]["message"] and out["e"]["line"] == 2


def test_block_scoped_result_only_is_reported_as_missing() -> None:
    tpl = template(scriptProcessor="if (payload.id) { let result = payload; }")
    [out] = run(tpl, [{"id": 1}])
    assert out["e"]["message"] == "result is undefined: the script must set result"
