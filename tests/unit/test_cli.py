"""The eventray CLI, called in-process, on real files (sample codecs, the sample tenant)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"


def run(argv: list[str]) -> tuple[int, list[Any]]:
    out = io.StringIO()
    code = main(argv, out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def test_scripts_run_codec_writes_one_line_per_uplink(tmp_path: Path) -> None:
    examples = json.loads((SAMPLES / "codecs/dragino-lht65.examples.json").read_text())
    lines = [{"fPort": e["fPort"], "bytes": e["bytes"]} for e in examples] + [
        {"fPort": 2, "bytes": [1, 2, "x"]}
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    target = tmp_path / "out.jsonl"
    code, _ = run(["scripts", "run", str(SAMPLES / "codecs/dragino-lht65.js"),
                   "--input", str(source), "--output", str(target)])  # fmt: skip
    assert code == 0
    results = [json.loads(x) for x in target.read_text().splitlines()]
    assert results[0] == {"data": examples[0]["expected"]}
    assert results[1]["errors"] == examples[1]["expected_errors"]  # returned as the codec did
    assert results[2] == {"error": {"stage": "decode", "message": 'bytes[2] is not a byte: "x"'}}


def test_scripts_run_stage_script_needs_payload_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "s.js"
    script.write_text("result = { doubled: payload.v * 2 };")
    good = tmp_path / "good.jsonl"
    good.write_text('{"payload": {"v": 21}}\n')
    assert run(["scripts", "run", str(script), "--input", str(good)]) == (0, [{"doubled": 42}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"v": 21}\n')
    assert run(["scripts", "run", str(script), "--input", str(bad)])[0] == 1
    assert 'expected {"payload": ...}' in capsys.readouterr().err


def test_templates_test_prints_each_stage(tmp_path: Path) -> None:
    code, reports = run(["templates", "test", str(SAMPLES / "tenant/templates.yaml"), "--id", "freezer-json",
                         "--input", str(SAMPLES / "inputs/freezer-gateway.jsonl")])  # fmt: skip
    assert code == 0
    assert reports[0]["decode"]["temperature"] == -19.4
    assert reports[0]["standardEvent"]["data"]["status"] == "ok"
    assert reports[1]["decode"]["temperature"] == -12  # converted from Fahrenheit
    assert reports[2]["error"] == {"stage": "validate", "line": 10,
                                   "message": 'Error: "temperature" must be less than or equal to 40'}  # fmt: skip
    assert "transform" not in reports[2]


def test_templates_test_refuses_ambiguous_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["templates", "test", str(SAMPLES / "tenant/templates.yaml"),
                   "--input", str(SAMPLES / "inputs/freezer-gateway.jsonl")])  # fmt: skip
    assert code == 1
    assert "choose one with --id" in capsys.readouterr().err


def test_rules_test_traces_cooldown() -> None:
    code, reports = run(["rules", "test", "factory-alpha-high-temp", "--config", str(SAMPLES / "tenant"),
                         "--events", str(SAMPLES / "inputs/freezer-cooldown.jsonl")])  # fmt: skip
    assert code == 0
    assert [r["matched"] for r in reports] == [False, True, False, True]
    fired = reports[1]
    assert fired["execs"] == [{"action": "notify", "triggerId": "slack-ops",
                               "message": "Alert #1: -12 C on freezer-01"}]  # fmt: skip
    assert fired["stateChanges"]["counter"] == {"from": 0, "to": 1}
    assert fired["captures"] == [{"action": "audit", "name": "high_temperature",
                                  "fields": {"temperature": -12.0, "assetId": "freezer-01"}}]  # fmt: skip
    cooldown = reports[2]["trace"]["items"][1]
    assert cooldown["operator"] == "olderThanSeconds" and cooldown["result"] is False
    assert cooldown["left"] == "2026-03-01T08:01:00.000Z" and cooldown["right"] == 600


def test_rules_test_uses_initial_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {"state:alpha-cold-room-1:factory-alpha-high-temp:lastAlertAt": "2026-03-01T07:59:00Z"}
        )
    )
    code, reports = run(["rules", "test", "factory-alpha-high-temp", "--config", str(SAMPLES / "tenant"),
                         "--events", str(SAMPLES / "inputs/freezer-cooldown.jsonl"), "--state", str(state)])  # fmt: skip
    assert code == 0
    # the last alert was at 07:59: 08:01 and 08:05 are inside the 600 s window, 08:12 is not
    assert [r["matched"] for r in reports] == [False, False, False, True]
    assert reports[3]["execs"][0]["message"] == "Alert #1: -10 C on freezer-01"


def test_validate_reports_problems_with_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["validate", str(SAMPLES / "tenant")])[1][0]["businessRules"] == 3
    broken = tmp_path / "rule.yaml"
    broken.write_text("kind: BusinessRule\nid: br\nruleId: nope\norgId: x\ntimezone: Mars/Base\n")
    assert run(["validate", str(broken)])[0] == 1
    err = capsys.readouterr().err
    # file:line:column of the field, as compilers print it (editors jump there)
    assert f"{broken}:5:1 [BusinessRule br] at timezone: unknown timezone 'Mars/Base'" in err


def _tenant_with_a_lookbehind(tmp_path: Path) -> tuple[Path, Path]:
    """The sample tenant plus a route group matching with a pattern RE2 refuses."""
    tenant = tmp_path / "tenant"
    shutil.copytree(SAMPLES / "tenant", tenant)
    shutil.copytree(SAMPLES / "codecs", tmp_path / "codecs")  # templates refer to ../codecs
    groups = tenant / "routegroups.yaml"
    groups.write_text(groups.read_text() + (
        "- kind: RouteGroup\n  id: rg-labels\n  orgId: acme-foods\n  name: Cold rooms\n"
        "  routers: [{kind: save_event, match: {rules: [\n"
        "    {field: data.label, operator: regex, value: '(?<=cold)-room'}]}}]\n"
    ))  # fmt: skip
    return tenant, groups


def _at(file: Path, needle: str) -> str:
    """``file:line:column`` (1-based) of the last occurrence of ``needle``."""
    lines = file.read_text().splitlines()
    number = max(i for i, text in enumerate(lines) if needle in text)
    return f"{file}:{number + 1}:{lines[number].rindex(needle) + 1}"


REFUSED_LOOKBEHIND = (
    "[RouteGroup rg-labels] at routers[0].match.rules[0].value: operator regex: invalid "
    "pattern '(?<=cold)-room': invalid perl operator: (?<=: lookaround is not supported, "
    "patterns run in linear time (RE2 syntax)"
)


def test_validate_refuses_a_pattern_re2_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant, groups = _tenant_with_a_lookbehind(tmp_path)
    assert run(["validate", str(tenant)]) == (1, [])
    err = capsys.readouterr().err
    assert err.startswith("eventray: 1 configuration problem(s)\n")
    assert f"  - {_at(groups, 'value: ')} {REFUSED_LOOKBEHIND}\n" in err
    # What validate refuses the local demo refuses too, before it runs (no re.error later).
    assert main(["demo", "--local", "--events", "10", "--config", str(tenant)]) == 1
    assert REFUSED_LOOKBEHIND in capsys.readouterr().err


def test_the_eventray_command_refuses_a_bad_regex_and_a_between_with_one_value(
    tmp_path: Path,
) -> None:
    tenant, groups = _tenant_with_a_lookbehind(tmp_path)
    rules = tenant / "rules.yaml"
    text = rules.read_text()
    condition = "operator: greaterThanEquals, value: {type: variable, value: threshold}"
    assert condition in text
    rules.write_text(
        text.replace(condition, "operator: between, value: {type: literal, value: 5}", 1)
    )
    result = subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", "validate", str(tenant)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("eventray: ") and lines[0].endswith(" configuration problem(s)")
    assert f"  - {_at(groups, 'value: ')} {REFUSED_LOOKBEHIND}" in lines
    assert (
        f"  - {_at(rules, 'value: {type: literal, value: 5}')} [Rule high-temp-alert] at when.items[0].data.value: operator between: "
        "needs two values (low, high), got 5"
    ) in lines


def test_missing_input_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "scripts",
            "run",
            str(SAMPLES / "codecs/dragino-lht65.js"),
            "--input",
            "/nonexistent.jsonl",
        ]
    )
    assert code == 1
    assert "/nonexistent.jsonl" in capsys.readouterr().err


def test_local_demo_runs_the_sample_tenant_end_to_end() -> None:
    out = io.StringIO()
    assert main(["demo", "--local", "--events", "3000", "--batch", "500"], out=out) == 0
    text = out.getvalue()
    assert "3000 events in" in text
    assert "factory-alpha-high-temp" in text  # a rule ran actions
    assert "DLQ reasons:" in text and "bind: body is not a JSON object" in text


@pytest.mark.parametrize(
    "variable",
    [
        "EVENTRAY_INGRESS__PORT",
        "EVENTRAY_METRICS__PORT",
        "EVENTRAY_MQTT__PORT",
        "EVENTRAY_API__PORT",
    ],
)
def test_up_names_a_taken_port_and_the_setting_that_moves_it(
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setenv("EVENTRAY_INGRESS__PORT", "0")
        monkeypatch.setenv("EVENTRAY_METRICS__PORT", "0")
        monkeypatch.setenv("EVENTRAY_MQTT__PORT", "0")
        monkeypatch.setenv("EVENTRAY_API__PORT", "0")
        monkeypatch.setenv(variable, str(port))
        assert main(["up", "--data-dir", str(data)]) == 3
    assert capsys.readouterr().err == (
        f"eventray: port {port} is taken: set {variable} to another port (0 picks a free one)\n"
    )
    assert not data.exists()  # refused before anything started


def test_demo_keeps_only_the_ports_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventray.cluster.stack_cli import _free_ports_unless_set
    from eventray.config.settings import load_settings

    monkeypatch.delenv("EVENTRAY_INGRESS__PORT", raising=False)
    monkeypatch.setenv("EVENTRAY_METRICS__PORT", "19464")
    monkeypatch.delenv("EVENTRAY_MQTT__PORT", raising=False)
    monkeypatch.delenv("EVENTRAY_API__PORT", raising=False)
    settings = _free_ports_unless_set(load_settings())
    assert (settings.ingress.port, settings.metrics.port, settings.mqtt.port) == (0, 19464, 0)
    assert settings.api.port == 0


def test_demo_allows_its_loopback_sinks_through_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventray.cluster.stack_cli import _allow_demo_sinks
    from eventray.config.settings import load_settings

    monkeypatch.delenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", raising=False)
    assert load_settings().triggers.allow_networks == ()  # the default stays public-only
    demo = _allow_demo_sinks(load_settings()).triggers
    assert demo.allow_networks == ("127.0.0.1/32",)
    assert demo.egress_policy().allows("127.0.0.1") and not demo.egress_policy().allows("10.0.0.1")
    monkeypatch.setenv("EVENTRAY_TRIGGERS__ALLOW_NETWORKS", '["10.0.0.0/8"]')
    kept = _allow_demo_sinks(load_settings()).triggers.allow_networks
    assert kept == ("10.0.0.0/8", "127.0.0.1/32")  # added to what the user allowed


@pytest.mark.parametrize("value", ["1000", "0", "-2"])
def test_a_stream_cap_that_means_nothing_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("EVENTRAY_NATS__MAX_BYTES", value)
    assert main(["up", "--data-dir", str(data)]) == 1
    assert capsys.readouterr().err == (
        "eventray: invalid settings: EVENTRAY_NATS__MAX_BYTES: max_bytes must be -1 (unlimited) "
        f"or at least 64 MiB (67108864 bytes), not {value}\n"
    )
    assert not data.exists()


def test_the_stream_is_capped_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventray.config.settings import load_settings

    for name in ("EVENTRAY_NATS__MAX_BYTES", "EVENTRAY_NATS__MAX_AGE_S"):
        monkeypatch.delenv(name, raising=False)
    nats = load_settings().nats
    assert (nats.max_bytes, nats.max_age_s) == (8 * 2**30, 3 * 24 * 3600)
    assert load_settings(nats={"max_bytes": -1}).nats.max_bytes == -1  # unlimited, if asked
    assert load_settings(nats={"max_bytes": 64 * 2**20}).nats.max_bytes == 64 * 2**20


def test_the_status_line_says_when_the_stream_lost_events() -> None:
    import time

    from eventray.cluster.stack_cli import _status_line

    drop = "partition p0: stream seq 6-40 dropped before a lane took them"
    status = {
        "lanes": [],
        "triggers": {"delivered": 0, "failed": 0},
        "ingress": {"stream_drops": {0: 1}, "last_drop": drop},
    }
    line = _status_line(status, time.monotonic())
    assert line.splitlines()[1] == (
        f"  EVENTS LOST: the stream dropped events no lane had taken (last: {drop}); "
        "raise EVENTRAY_NATS__MAX_BYTES or __MAX_AGE_S"
    )
    assert len(_status_line({**status, "ingress": {}}, time.monotonic()).splitlines()) == 1
