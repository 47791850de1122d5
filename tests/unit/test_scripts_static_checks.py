"""The bundle's static checks: codec reuse and $mv hoisting only ever apply when provably safe,
and what a script sees is the same either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.bundle import bundle_for_script, bundle_for_template
from eventray.pipeline.scripts.codec_reuse import reusable_codec
from eventray.pipeline.scripts.jslex import LexError, tokenize
from eventray.pipeline.scripts.mv_hoist import hoist_schemas
from eventray.pipeline.scripts.runner import ScriptRunner

CODECS = Path(__file__).resolve().parents[2] / "config" / "samples" / "codecs"


# ---------------------------------------------------------------------- the tokenizer
def kinds(source: str) -> list[tuple[str, str]]:
    return [(token.kind, token.text) for token in tokenize(source)]


def test_slash_is_division_or_regex_by_what_precedes_it() -> None:
    assert ("regex", "/b/g") in kinds("x = a / 2; y = /b/g.test(s);")
    assert ("punct", "/") in kinds("x = (a + b) / 2")
    assert ("regex", "/[/]/") in kinds("if (ok) /[/]/.test(s)")
    assert ("punct", "/") in kinds("x.return / 2")


def test_template_substitutions_are_code() -> None:
    assert ("name", "secret") in kinds("const s = `a ${ {k: secret}.k } b`;")


@pytest.mark.parametrize(
    "source",
    ["{ } / 2 / x", "a++ / 2", "of / 2", "\\u0061 = 1", "'open", "`open", "/* open", "(]"],
)
def test_ambiguous_or_broken_sources_are_refused(source: str) -> None:
    with pytest.raises(LexError):
        tokenize(source)


# ---------------------------------------------------------------------- codec reuse
def test_the_sample_codecs_keep_no_state() -> None:
    for path in sorted(CODECS.glob("*.js")):
        assert reusable_codec(path.read_text()), path.name


@pytest.mark.parametrize(
    "source",
    [
        "var n = 0; function decodeUplink(i) { n++; return { data: {} }; }",
        "function decodeUplink(i) { decodeUplink.n = 1; return { data: {} }; }",
        "function decodeUplink(i) { return { data: h.call(null) }; } function h() {}",
        "function decodeUplink(i) { var f = h; f.n = 1; } function h() {}",
        "function decodeUplink(i) { return new h(); } function h() {}",
        "function decodeUplink(i) { return arguments.callee; }",
        "function decodeUplink(i) { function g() { return g.caller; } return g(); }",
        "function decodeUplink(i) { eval('1'); }",
        "function decodeUplink(i) { return `${h = 1}`; } function h() {}",
        "class R {} function decodeUplink(i) { return { data: {} }; }",
        "const decodeUplink = (i) => ({ data: {} });",
        "function decodeUplink(i) { if (i) {} /x/.test(''); }",
    ],
    ids=[
        "top-level-var",
        "function-property",
        "function-as-value",
        "alias",
        "constructed",
        "callee",
        "caller",
        "eval",
        "template-assignment",
        "class",
        "arrow",
        "ambiguous-slash",
    ],
)
def test_anything_that_could_keep_state_uses_the_factory(source: str) -> None:
    assert not reusable_codec(source)


def test_text_in_comments_strings_and_regexes_is_not_code() -> None:
    source = """
    // helper = 5
    function decodeUplink(input) {
      /* helper.x = 1 */
      var s = "helper = 2", r = /helper = 3/;
      return { data: helper(input.bytes) };
    }
    function helper(bytes) { return { n: bytes.length }; }
    """
    assert reusable_codec(source)


def test_a_codec_keeping_state_on_its_function_still_starts_fresh() -> None:
    source = """
    function decodeUplink(input) {
      decodeUplink.calls = (decodeUplink.calls || 0) + 1;
      return { data: { calls: decodeUplink.calls } };
    }
    """
    runner = ScriptRunner(bundle_for_script(source))
    outs = runner.run([{"fPort": 1, "bytes": [1]}] * 3)
    assert [o["r"]["data"] for o in outs] == [{"calls": 1}] * 3


def test_a_reused_codec_still_loses_the_globals_it_creates() -> None:
    source = """
    function decodeUplink(input) {
      leaked = (typeof leaked === "undefined" ? 0 : leaked) + 1;
      globalThis.explicit = (globalThis.explicit || 0) + 1;
      this.viaThis = (this.viaThis || 0) + 1;
      return { data: count(leaked, globalThis.explicit, this.viaThis) };
    }
    function count(a, b, c) { return [a, b, c]; }
    """
    assert reusable_codec(source)
    runner = ScriptRunner(bundle_for_script(source))
    outs = runner.run([{"fPort": 1, "bytes": [1]}] * 3)
    assert [o["r"]["data"] for o in outs] == [[1, 1, 1]] * 3


# ---------------------------------------------------------------------- $mv hoisting
FREEZER_SCHEMA = """const schema = $mv.object({
  deviceId: $mv.string().required(),
  temperature: $mv.number().required().min(-60).max(40),
  tags: $mv.array($mv.string().pattern(/^[a-z]+$/)).max(2),
});
const { error, value } = schema.validate(payload);
if (error) throw new Error(error.message);
result = value;"""


def test_literal_schemas_are_hoisted_keeping_line_numbers() -> None:
    body, hoisted = hoist_schemas(FREEZER_SCHEMA)
    assert len(hoisted) == 1 and hoisted[0].startswith("$mv.object({")
    assert body.startswith("const schema = __mvh(0)")
    assert body.count("\n") == FREEZER_SCHEMA.count("\n")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("const s = $mv.number().required().min(limit);", ["$mv.number().required()"]),
        ("const s = $mv.object({ a: $mv.number().min(x) });", ["$mv.number()"]),
        ("const s = $mv.string().pattern(/a/g);", ["$mv.string()"]),
        ("const s = $mv.string().pattern('\\\\d').max(010);", ["$mv.string()"]),
        ("const s = $mv.object({ __proto__: $mv.string() });", ["$mv.string()"]),
        ("const s = new $mv.string();", []),
        ("function f($mv) { return $mv.string(); }", []),
        ("eval(''); const s = $mv.string();", []),
    ],
    ids=[
        "variable-argument",
        "impure-child",
        "global-regex",
        "escape-or-octal",
        "proto-key",
        "new",
        "shadowed",
        "eval",
    ],
)
def test_only_literal_only_expressions_are_hoisted(source: str, expected: list[str]) -> None:
    assert hoist_schemas(source)[1] == expected


def validator_template(validator: str) -> AssetTemplate:
    return AssetTemplate(
        id="v",
        orgId="acme",
        name="v",
        scriptValidator=validator,
        scriptConversion=(
            "result = { eventType: 'r', eventId: 'e', data: payload, created: '2026-01-01T00:00:00Z' };"
        ),
    )


def test_hoisted_and_inline_schemas_give_the_same_results() -> None:
    hoisted = validator_template(FREEZER_SCHEMA)
    inline = validator_template("eval; " + FREEZER_SCHEMA)  # `eval` switches hoisting off
    assert "__mvh" in bundle_for_template(hoisted).stages[0].program
    assert "__mvh" not in bundle_for_template(inline).stages[0].program
    payloads: list[Any] = [
        {"deviceId": "a", "temperature": -20, "tags": ["x"]},
        {"deviceId": "a", "temperature": -61},
        {"temperature": 99, "tags": ["x", "Y", "z"]},
        {"deviceId": 7, "temperature": "cold", "tags": "x"},
        [],
        None,
    ]
    first = ScriptRunner(bundle_for_template(hoisted)).run(payloads)
    assert first == ScriptRunner(bundle_for_template(inline)).run(payloads)
    assert first[2]["e"] == {
        "stage": "validate",
        "message": 'Error: "deviceId" is required; "temperature" must be less than or equal to '
        '40; "tags" length must be less than or equal to 2; "tags[1]" must match /^[a-z]+$/',
        "line": 7,
    }


def test_changing_a_hoisted_schema_changes_only_that_events_schema() -> None:
    validator = """
    const s = $mv.object({ v: $mv.number() });
    if (payload.strict) s.required().min(0);
    const { error } = s.validate(payload.value);
    result = { ok: !error, message: error ? error.message : null };
    """
    runner = ScriptRunner(bundle_for_template(validator_template(validator)))
    outs = runner.run(
        [{"strict": True}, {}, {"strict": True, "value": {"v": 1}}, {"value": {"v": "x"}}]
    )
    assert [o["r"]["data"] for o in outs] == [
        {"ok": False, "message": '"value" is required'},
        {"ok": True, "message": None},
        {"ok": True, "message": None},
        {"ok": False, "message": '"v" must be a number'},
    ]


def test_this_in_a_codec_is_its_exports_fresh_per_uplink() -> None:
    source = """
    function decodeUplink(input) {
      this.calls = (this.calls || 0) + 1;
      return { data: { viaThis: this.Decoder(input.bytes).n, calls: this.calls } };
    }
    function Decoder(bytes) { return { n: bytes.length }; }
    """
    assert reusable_codec(source)
    runner = ScriptRunner(bundle_for_script(source))
    outs = runner.run([{"fPort": 1, "bytes": [1, 2]}] * 3)
    assert [o["r"]["data"] for o in outs] == [{"viaThis": 2, "calls": 1}] * 3
