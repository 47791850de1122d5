"""The ``eventray`` command as people use it: help on every flag, ``--version``, exit codes that
tell usage (2), invalid input (1) and runtime failure (3) apart, flags that refuse nonsense
values, unknown ids answered with the valid ones, aligned summaries, the demo's progress line.
Real commands on real files; no stack runs here (the "runtime failure" cases are exactly that).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from eventray.cluster.admin_token import TOKEN_VARIABLE
from eventray.cluster.cli import build_parser, main
from eventray.cluster.exit_codes import exit_code
from eventray.cluster.manage_cli import ApiClient
from eventray.cluster.progress import Progress
from eventray.cluster.table import render
from eventray.pipeline.errors import (
    ConfigError,
    InvalidInput,
    RetryableError,
    Unavailable,
    UnknownId,
)

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"
TENANT = SAMPLES / "tenant"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """argparse's refusal: exit 2 and its message."""
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    monkeypatch.delenv("EVENTRAY_API_TOKEN", raising=False)
    (tmp_path / "data").mkdir(mode=0o700)
    return tmp_path / "data"


# --------------------------------------------------------------------------- help


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _walk(sub, f"{path} {name}")
    return found


def test_every_subcommand_and_every_flag_has_help() -> None:
    parsers = _walk(build_parser(), "eventray")
    assert len(parsers) > 30  # the walk reached the nested commands (logs dlq, tokens list...)
    missing = []
    for path, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                documented = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{path} {name}" for name in action.choices if name not in documented]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_no_flag_takes_a_bare_int_or_float() -> None:
    """A count, size or duration goes through eventray.cluster.arg_types, which refuses what
    cannot be meant (``--events -5``); a bare ``int`` would take it."""
    bare = [f"{path} {'/'.join(action.option_strings) or action.dest}"
            for path, parser in _walk(build_parser(), "eventray")
            for action in parser._actions if action.type in (int, float)]  # fmt: skip
    assert bare == []


def test_help_of_a_nested_command_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["logs", "triggers", "--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert "--failed" in text and "only rows where success is false" in text


# --------------------------------------------------------------------------- --version


def test_version_prints_the_installed_distribution_s_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", "--version"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, f"eventray {version('eventray')}\n")


# --------------------------------------------------------------------------- exit codes


def test_the_code_is_decided_by_the_error_s_class() -> None:
    assert exit_code(ConfigError([])) == 1
    assert exit_code(UnknownId("template", "x", ["a"])) == 1
    assert exit_code(InvalidInput("bad value")) == 1
    assert exit_code(Unavailable("no stack")) == 3
    assert exit_code(RetryableError("store down")) == 3
    assert exit_code(FileNotFoundError(2, "No such file", "x.yaml")) == 1
    assert exit_code(ConnectionRefusedError(111, "refused")) == 3
    assert exit_code(TimeoutError()) == 3
    assert exit_code(RuntimeError("a bug")) == 3
    assert exit_code(KeyboardInterrupt()) == 130


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--local", "--events", "-5"], "argument --events: must be a positive integer, not -5"),
        (["demo", "--local", "--events", "0"], "argument --events: must be a positive integer, not 0"),
        (["demo", "--local", "--events", "many"], "argument --events: not an integer: 'many'"),
        (["demo", "--batch", "-1"], "argument --batch: must be a positive integer, not -1"),
        (["demo", "--rate", "-3"], "argument --rate: must be 0 or more, not -3"),
        (["demo", "--rate", "nan"], "argument --rate: not a finite number: 'nan'"),
        (["events", "query", "--limit", "0"], "argument --limit: must be between 1 and 10000, not 0"),
        (["logs", "dlq", "--limit", "10001"], "argument --limit: must be between 1 and 10000"),
        (["get", "assets", "--limit", "-1"], "argument --limit: must be between 1 and 1000, not -1"),
        (["dlq", "list", "--limit", "0"], "argument --limit: must be a positive integer, not 0"),
        (["dlq", "redrive", "--wait", "-1"], "argument --wait: must be above 0, not -1"),
        (["replay", "--org", "o", "--from-seq", "0"], "argument --from-seq: must be a positive"),
        (["history", "asset", "a", "--rollback", "0"], "argument --rollback: must be a positive"),
        (["tokens", "create", "--org", "o", "--role", "admin", "--expires-days", "0"],
         "argument --expires-days: must be above 0, not 0"),
        (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["validate"], "the following arguments are required: paths"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_flag(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in usage_error(capsys, *argv)


def test_invalid_input_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Organization\nid: acme\nname: [unclosed\n")
    assert run("validate", str(broken))[0] == 1
    assert capsys.readouterr().err.startswith(
        f"eventray: 1 configuration problem(s)\n  - {broken}:4:1: YAML syntax: "
    )
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"fPort": 1}\nnot json\n')
    code, _ = run("scripts", "run", str(SAMPLES / "codecs/dragino-lht65.js"), "--input", str(lines))
    assert code == 1 and f"{lines}:2: not valid JSON" in capsys.readouterr().err
    assert run("validate", str(tmp_path / "missing.yaml"))[0] == 1
    assert f"{tmp_path / 'missing.yaml'}: no such file" in capsys.readouterr().err  # fmt: skip


def test_a_validation_problem_points_at_the_field_s_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asset = tmp_path / "assets.yaml"
    asset.write_text(
        "kind: Organization\nid: acme\nname: Acme\ntype: company\n---\n"
        "- kind: Asset\n  id: ok\n  name: fine\n  orgId: acme\n  assetTemplateId: t\n"
        "- kind: Asset\n  id: bad\n  name: 7 days\n  orgId: acme\n  enabled: maybe\n"
    )
    assert run("validate", str(asset))[0] == 1
    err = capsys.readouterr().err
    # line 15 is "enabled: maybe" in the second item of the second document
    assert f"  - {asset}:15:3 [Asset bad] at enabled: " in err


def test_runtime_failures_exit_3(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("status", "--data-dir", str(data))[0] == 3
    assert capsys.readouterr().err == (
        f"eventray: no running stack found in {data} (start one with eventray up)\n"
    )
    assert run("events", "story", "t-1", "--data-dir", str(data))[0] == 3
    assert "no running stack" in capsys.readouterr().err
    code, _ = run("get", "assets", "--token", "ert_x", "--data-dir", str(data))
    assert code == 3 and "no stack with a management API runs" in capsys.readouterr().err


def test_an_api_that_does_not_answer_is_a_runtime_failure() -> None:
    with socket.socket() as closed:  # a port nobody listens on: bound, then closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(
        Unavailable, match=f"the management API at http://127.0.0.1:{port} does not answer"
    ):
        ApiClient(f"http://127.0.0.1:{port}", "ert_x").call("GET", "/assets")  # fmt: skip


# --------------------------------------------------------------------------- unknown ids


def test_an_unknown_template_lists_the_templates_in_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    templates = TENANT / "templates.yaml"
    code, _ = run("templates", "test", str(templates), "--id", "freezer-jsn",
                  "--input", str(SAMPLES / "inputs/freezer-gateway.jsonl"))  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err == (
        f"eventray: unknown template 'freezer-jsn' in {templates}; did you mean freezer-json? "
        "valid: em300-th, freezer-json, ws301-door\n"
    )


def test_an_unknown_business_rule_lists_those_of_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = run("rules", "test", "high-temp", "--config", str(TENANT),
                  "--events", str(SAMPLES / "inputs/freezer-cooldown.jsonl"))  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err == (
        f"eventray: unknown business rule 'high-temp' in {TENANT}; did you mean "
        "factory-alpha-high-temp? valid: cold-room-door, factory-alpha-escalation, "
        "factory-alpha-high-temp\n"
    )


def test_get_and_delete_of_an_unknown_entity_list_the_valid_ids(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("apply", "-f", str(TENANT), "--data-dir", str(data))[0] == 0
    assert run("get", "asset", "freezer-1", "--data-dir", str(data))[0] == 1
    err = capsys.readouterr().err
    assert err.startswith("eventray: no Asset 'freezer-1'; did you mean freezer-01")
    assert run("delete", "route-groups", "rg-nope", "--data-dir", str(data))[0] == 1
    err = capsys.readouterr().err
    assert "valid: rg-cold-chain, rg-critical-webhook, rg-store-only" in err
    code, _ = run("tokens", "create", "--org", "acme", "--role", "viewer", "--data-dir", str(data))
    assert code == 1 and "did you mean acme-foods?" in capsys.readouterr().err


def test_the_list_of_valid_ids_is_bounded() -> None:
    many = [f"asset-{n:04d}" for n in range(500)]
    text = str(UnknownId("Asset", "zzz", many))
    assert text.endswith("asset-0009 (and 490 more)") and len(text) < 300


# --------------------------------------------------------------------------- summaries


def test_a_table_aligns_text_left_and_numbers_right() -> None:
    lines = render(("kind", "count"), [("assets", 7), ("businessRules", 12), ("x", 0)])
    assert lines == [
        "kind           count",
        "assets             7",
        "businessRules     12",
        "x                  0",
    ]


def test_validate_prints_a_table_when_asked_and_json_when_piped(tmp_path: Path) -> None:
    code, text = run("validate", str(TENANT), "--format", "table")
    rows = text.splitlines()
    assert code == 0 and rows[0].split() == ["kind", "count"]
    assert len({len(row) for row in rows[1:-1]}) == 1  # every row as wide: aligned
    assert rows[-1].startswith("valid: ")
    code, text = run("validate", str(TENANT))  # out is not a terminal: JSON for scripts
    assert json.loads(text)["valid"] is True


def test_the_local_demo_summary_is_aligned() -> None:
    code, text = run("demo", "--local", "--events", "400", "--batch", "200")
    assert code == 0
    block = text.split("events per organization and type:\n")[1].split("\n\n")[0].splitlines()
    assert block[0].split() == ["organization", "type", "events"]
    ends = {len(line) for line in block}
    assert len(ends) == 1  # the count column is right-aligned under its header


# --------------------------------------------------------------------------- progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_a_plain_line_at_most_every_interval_off_a_terminal() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(out, total=1000, interval_s=2.0, clock=clock)
    for sent in range(100, 1001, 100):  # ten updates over 5 s: three lines, then the last
        clock.now += 0.5
        progress.update(sent=sent, stored=sent - 50, failed=1)
    progress.done(sent=1000, stored=1000, failed=1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[-1] == "sent 1,000/1,000 (100%)  stored 1,000  dlq 1  200 events/s    5.0 s"


def test_progress_redraws_one_line_on_a_terminal() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(out, total=10, clock=clock, tty=True)
    clock.now = 1.0
    progress.update(sent=5, stored=5)
    clock.now = 2.0
    progress.done(sent=10, stored=10)
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("s\n")
