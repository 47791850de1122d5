"""Operating a running stack: config changes without restart, and the CLI attached to it."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import read_entity_documents
from tests.e2e.conftest import plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_edited_template_applies_to_the_next_event_without_restart(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    [template] = [
        d
        for d in read_entity_documents([REPO / "config/samples/tenant/templates.yaml"])
        if d["id"] == "freezer-json"
    ]
    before = post(stack, reading("FRZ-0002", 10, -19.0)).json()["eventTrackerId"]
    wait_for(
        lambda: bool(select(f"SELECT 1 FROM {{db}}.events WHERE event_tracker_id = '{before}'"))
    )
    edited = copy.deepcopy(template)
    edited["scriptConversion"] = template["scriptConversion"].replace(
        "status },", "status, firmware: 'v2' },"
    )
    assert edited["scriptConversion"] != template["scriptConversion"]
    try:
        assert stack.wait_revision(stack.apply([edited]))  # the config message reached the lanes
        after = post(stack, reading("FRZ-0002", 11, -19.0)).json()["eventTrackerId"]

        def payloads() -> dict[str, Any]:
            rows = select(
                "SELECT event_tracker_id, payload FROM {db}.events FINAL "
                f"WHERE event_tracker_id IN ('{before}', '{after}')"
            )
            return {r["event_tracker_id"]: json.loads(r["payload"]) for r in rows}

        wait_for(lambda: len(payloads()) == 2)
        assert "firmware" not in payloads()[before]
        assert payloads()[after]["firmware"] == "v2"
    finally:
        assert stack.wait_revision(stack.apply([template]))


def _cli(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eventray.cluster.cli",
            *args,
            "--data-dir",
            str(stack.settings.data_dir),
        ],
        env={**plain_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _head_requires_a_token() -> bool:
    import psutil

    [gcs] = [
        p for p in psutil.Process().children(recursive=True) if p.name().startswith("gcs_server")
    ]
    return bool(gcs.environ().get("RAY_AUTH_MODE") == "token")


def test_cli_attaches_to_the_running_stack(stack: Stack, tmp_path: Path) -> None:
    assert _head_requires_a_token()  # as a head started by ray.init would (Ray's default)
    tracker = post(stack, reading("FRZ-0003", 20, -18.5)).json()["eventTrackerId"]
    wait_for(
        lambda: (
            tracker
            in _cli(
                stack, "events", "query", "--org", "alpha-cold-room-2", "--tracker", tracker
            ).stdout
        )
    )
    found = _cli(
        stack, "events", "query", "--org", "factory-alpha", "--children", "--tracker", tracker
    )
    assert found.returncode == 0, found.stderr[-2000:]
    [row] = [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]
    assert (row["event_tracker_id"], row["asset_id"]) == (tracker, "freezer-03")
    status = _cli(stack, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    report = json.loads(status.stdout[status.stdout.index("{") :])
    assert report["lanes"] and "lag" in report["lanes"][0] and report["store"]["rows_written"] > 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: BusinessRule\nid: br-x\nruleId: no-such-rule\norgId: acme-foods\n")
    refused = _cli(stack, "apply", "-f", str(broken))
    assert refused.returncode == 1
    assert "unknown rule 'no-such-rule'" in refused.stderr


def _stored(stack: Stack) -> tuple[int, list[str]]:
    config = stack.wiring.config_store()
    try:
        return config.revision(), [str(d["id"]) for d in config.documents()]
    finally:
        config.close()


def test_apply_needs_the_stack_s_admin_token(stack: Stack, tmp_path: Path) -> None:
    org = tmp_path / "org.yaml"
    org.write_text(
        "kind: Organization\nid: token-test\nname: T\ntype: site\nparentId: acme-foods\n"
    )
    before = _stored(stack)
    wrong = _cli(stack, "apply", "-f", str(org), env={"EVENTRAY_ADMIN_TOKEN": "guessed"})
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("eventray: wrong admin token") and wrong.stderr.count("\n") == 1
    assert _stored(stack) == before  # nothing applied
    token = (stack.settings.data_dir / "admin.token").read_text().strip()
    right = _cli(stack, "apply", "-f", str(org), "--token", token)
    assert right.returncode == 0, right.stderr[-2000:]
    report = json.loads(right.stdout)
    assert report["runningStackNotified"] and "token-test" in _stored(stack)[1]
    assert stack.wait_revision(report["revision"])


def test_credentials_appear_in_no_log_and_no_command_line(stack: Stack) -> None:
    """The servers' passwords and the admin token are in their owner-only files and in the
    actors' memory, never on a command line (every local user reads those) or in a log."""
    import psutil
    import ray

    nats, valkey = stack.services
    token = (stack.settings.data_dir / "admin.token").read_text().strip()
    secrets = {*nats.passwords.values(), *valkey.passwords.values(), token}
    assert (
        len(secrets) == 9
    )  # NATS: admin, ingress, lane, mqtt-probe, api, replay; Valkey: 2; token
    assert post(stack, reading("FRZ-0001", 50, -20.0)).status_code == 201
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    assert any("raylet" in p.name() for p in processes) and len(processes) > 8
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            shown = " ".join(process.cmdline())
            assert not any(secret in shown for secret in secrets), process.name()
    holders = {"nats-server.conf", "auth.conf", "stack.json", "admin.token"}
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in stack.settings.data_dir.rglob("*") if p.is_file() and p.name not in holders]
    logs += [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "nats-server.log" for p in logs) and any(p.suffix == ".err" for p in logs)
    for path in logs:
        with contextlib.suppress(OSError):
            text = path.read_bytes()
            assert not any(secret.encode() in text for secret in secrets), path


def test_disabled_data_source_answers_403(stack: Stack) -> None:
    [source] = [
        d
        for d in read_entity_documents([REPO / "config/samples/tenant/datasources.yaml"])
        if d["id"] == "ds-gateway-http"
    ]
    try:
        assert stack.wait_revision(stack.apply([{**source, "enabled": False}]))
        wait_for(
            lambda: post(stack, reading("FRZ-0001", 30, -20.0)).status_code == 403, timeout_s=10
        )
        answer = post(stack, reading("FRZ-0001", 30, -20.0))
        assert answer.json() == {"error": "data source 'ds-gateway-http' is disabled"}
    finally:
        assert stack.wait_revision(stack.apply([source]))
    wait_for(lambda: post(stack, reading("FRZ-0001", 31, -20.0)).status_code == 201, timeout_s=10)


def test_prometheus_metrics_follow_the_pipeline(stack: Stack) -> None:
    import requests

    def scrape() -> dict[str, float]:
        text = requests.get(stack.metrics_url, timeout=10).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def lane_events(values: dict[str, float]) -> float:
        return sum(v for k, v in values.items() if k.startswith("eventray_lane_events_total"))

    assert stack.metrics_url.startswith("http://127.0.0.1:")
    assert stack.wait_idle(timeout_s=60)  # earlier tests' events are all counted
    before = scrape()
    assert post(stack, reading("FRZ-0002", 40, -19.0)).status_code == 201
    wait_for(lambda: lane_events(scrape()) == lane_events(before) + 1)
    after = scrape()
    assert after['eventray_ingress_answers_total{status="201"}'] >= 1
    assert after["eventray_store_rows_total"] > before.get("eventray_store_rows_total", 0)
    assert any(k.startswith('eventray_consumer_lag{partition="') for k in after)


def test_events_of_a_device_applied_a_moment_ago_are_processed_not_dead_lettered(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    """The ingress may run a new config before a lane does (each reloads on the change
    notice; a lane builds more). Events the ingress accepted under the new revision carry it,
    and the lane catches up before it processes them: the `eventray demo` found 1,243 events
    of 20,000 in the DLQ at bind ("unknown data source") when the traffic started right after
    the apply."""
    import ray

    device = {"kind": "Asset", "id": "freezer-99", "orgId": "alpha-cold-room-1",
              "assetUUID": "FRZ-0099", "name": "Freezer 99", "templateId": "freezer-json",
              "routeGroupIds": ["rg-cold-chain"]}  # fmt: skip
    revision = stack.apply([device])
    ingress = stack.actors["ingress"]
    wait_for(lambda: ray.get(ingress.health.remote())["revision"] >= revision, timeout_s=10)
    answers = [post(stack, reading("FRZ-0099", minute, -19.0)) for minute in range(20)]
    assert {a.status_code for a in answers} == {201}
    quoted = ",".join(f"'{a.json()['eventTrackerId']}'" for a in answers)

    def handled() -> tuple[int, int]:
        stored = select(
            f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id IN ({quoted})"
        )
        dead = select(
            f"SELECT count() AS n FROM {{db}}.dlq FINAL WHERE event_tracker_id IN ({quoted})"
        )
        return int(stored[0]["n"]), int(dead[0]["n"])  # fmt: skip

    wait_for(lambda: sum(handled()) == 20)
    assert handled() == (20, 0)
