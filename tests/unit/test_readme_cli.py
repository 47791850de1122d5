"""The README's ``eventray`` commands run as written, so the README cannot drift from the CLI.

Every ``eventray ...`` line of a ``bash`` (or ``sh``/``console``) block, continuation lines
joined and ``a; b`` split, and every ``$ eventray ...`` line of an output example. The ones that
need no running stack are run in a temporary working directory holding ``config/samples`` as a
checkout does (the README's paths are relative to one); the others must at least parse with the
real parser. ``text`` blocks are synopses (``[--flag X]``, ``a|b``) and are not taken.
"""

from __future__ import annotations

import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from eventray.cluster.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUNNABLE = (
    ("--version",),
    ("validate",),
    ("scripts", "run"),
    ("templates", "test"),
    ("rules", "test"),
    ("demo", "--local"),
)
"""Commands that need no stack: the argv starts with one of these (``demo --local`` in any
order of its flags)."""


def readme_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line number, argv after "eventray")`` of each command line in the README."""
    found: list[tuple[int, list[str]]] = []
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        language, body = block.group(1), block.group(2)
        first = text[: block.start()].count("\n") + 2
        shell = language in ("bash", "sh", "console")
        lines = body.splitlines()
        number = 0
        while number < len(lines):
            start, line = number, lines[number]
            while line.rstrip().endswith("\\") and number + 1 < len(lines):
                number += 1
                line = line.rstrip()[:-1] + " " + lines[number].strip()
            number += 1
            stripped = line.strip()
            if stripped.startswith("$ eventray "):
                stripped = stripped[2:]
            elif not (shell and stripped.startswith("eventray ")):
                continue
            for part in stripped.split(";"):
                words = shlex.split(part, comments=True)
                for index, word in enumerate(words):  # the shell's redirections, not argv
                    if word in (">", ">>", "<", "|", "2>", "&&", "||"):
                        words = words[:index]
                        break
                if words and words[0] == "eventray":
                    found.append((first + start, words[1:]))
    return found


COMMANDS = readme_commands(README.read_text())


def _runnable(argv: list[str]) -> bool:
    if argv[:1] == ["demo"]:
        return "--local" in argv
    return any(tuple(argv[: len(prefix)]) == prefix for prefix in RUNNABLE)


def test_the_readme_has_commands_of_both_kinds() -> None:
    assert len(COMMANDS) > 20
    assert sum(_runnable(argv) for _, argv in COMMANDS) >= 5
    taken = [argv[0] for _, argv in COMMANDS]
    for command in ("events", "logs", "dlq", "replay", "tokens", "get", "apply", "up"):
        assert command in taken


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the samples where a checkout has them, nothing else."""
    shutil.copytree(ROOT / "config" / "samples", tmp_path / "config" / "samples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTRAY_DATA_DIR", str(tmp_path / ".eventray"))
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [argv for _, argv in COMMANDS if _runnable(argv)],
    ids=[f"README:{line}" for line, argv in COMMANDS if _runnable(argv)],
)
def test_a_readme_command_that_needs_no_stack_runs(
    argv: list[str], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    try:
        code = main(argv, out=out)
    except SystemExit as stop:  # --version, --help
        code = int(stop.code or 0)
    assert code == 0, capsys.readouterr().err
    assert out.getvalue() or capsys.readouterr().out  # it printed what it is for


@pytest.mark.parametrize(
    "argv",
    [argv for _, argv in COMMANDS if not _runnable(argv)],
    ids=[f"README:{line}" for line, argv in COMMANDS if not _runnable(argv)],
)
def test_a_readme_command_that_needs_a_stack_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)  # a usage error raises SystemExit(2): fails here
    assert callable(args.handler)


def test_the_extraction_joins_continuations_and_skips_synopses() -> None:
    text = (
        "```bash\neventray rules test br --config c \\\n    --events e.jsonl  # why\n"
        "eventray tokens list; eventray tokens revoke ID\nexport X=1\n"
        "eventray events query --all > out.csv\n```\n"
        "```text\neventray get KIND [ID]\n```\n"
        "```\n$ eventray status\n{...}\n```\n"
    )
    assert [argv for _, argv in readme_commands(text)] == [
        ["rules", "test", "br", "--config", "c", "--events", "e.jsonl"],
        ["tokens", "list"],
        ["tokens", "revoke", "ID"],
        ["events", "query", "--all"],
        ["status"],
    ]
