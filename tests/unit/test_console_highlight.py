"""The console's JavaScript tokenizer (actors/console/highlight.js), run under node: the
tokens cover the source whole and carry the right kinds. Skipped without node (the browser
test checks the highlighted spans too)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")
SOURCE = Path(__file__).resolve().parents[2] / "actors" / "console" / "highlight.js"
pytestmark = pytest.mark.skipif(NODE is None, reason="no node on this machine")

SCRIPT = (
    "const t = payload.temperature; // °C\n"
    "if (/^F[0-9]+$/i.test(payload.id)) throw new Error(`warm: ${t + {a: 1}.a} now`);\n"
    "/* block */ result = { ok: t / 2 / 3, hex: 0x1F, s: 'it\\'s', n: null };"
)


def tokens(tmp_path: Path, src: str) -> list[list[str]]:
    module = tmp_path / "highlight.mjs"  # .mjs: node loads it as the ES module it is
    module.write_text(SOURCE.read_text())
    code = (f"import {{ tokenize }} from {json.dumps(module.as_uri())};"
            f"console.log(JSON.stringify(tokenize({json.dumps(src)}).map(t => [t.type, t.text])));")  # fmt: skip
    assert NODE is not None
    done = subprocess.run([NODE, "--input-type=module", "-e", code], capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    out: list[list[str]] = json.loads(done.stdout)
    return out


def test_tokens_cover_the_source_with_their_kinds(tmp_path: Path) -> None:
    found = tokens(tmp_path, SCRIPT)
    assert "".join(text for _, text in found) == SCRIPT
    kinds = [(kind, text) for kind, text in found if kind != "space"]
    for expected in [("keyword", "const"), ("comment", "// °C"), ("regex", "/^F[0-9]+$/i"),
                     ("keyword", "throw"), ("string", " now`"), ("punct", "${"),
                     ("comment", "/* block */"), ("number", "0x1F"), ("string", "'it\\'s'"),
                     ("literal", "null"), ("number", "1")]:  # fmt: skip
        assert expected in kinds, (expected, kinds)
    # "t / 2 / 3" is division, not a regular expression
    start = kinds.index(("ident", "ok"))
    assert kinds[start + 2 : start + 7] == [("ident", "t"), ("punct", "/"), ("number", "2"),
                                            ("punct", "/"), ("number", "3")]  # fmt: skip
    # inside ${...} it is code again: the "+" and the object literal's braces
    inner = kinds.index(("punct", "${"))
    assert kinds[inner + 1 : inner + 4] == [("ident", "t"), ("punct", "+"), ("punct", "{")]


def test_unterminated_text_still_covers_the_source(tmp_path: Path) -> None:
    for src in ["const s = 'open\nnext", "x = `a ${b", "/* never closed", "a = /[/"]:
        assert "".join(text for _, text in tokens(tmp_path, src)) == src
