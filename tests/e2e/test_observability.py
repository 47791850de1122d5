"""Observability of a running stack: the stage metrics in Ray's own metrics export, the Grafana
dashboard against the names that really exist, the actors' JSON logs in Ray's worker log
files, the Ray dashboard, ``eventray status``, and a stuck lane reported instead of waited for.

The stack of this module runs the Ray dashboard (on a free port), as ``up`` and ``demo`` do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import ray

from eventray.actors.ray_metrics import RAY_METRIC_NAMES
from eventray.cluster.stack import Stack
from tests.e2e.conftest import plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

STACK_RAY = {"include_dashboard": True, "dashboard_port": 0}
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "eventray-dashboard.json"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def _get(url: str, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        body: bytes = answer.read()
        return body.decode()


def ray_scrape() -> str:
    """Every alive node's metrics export (the dashboard agent's Prometheus endpoint)."""
    texts = []
    for node in ray.nodes():
        if node["Alive"] and node.get("MetricsExportPort"):
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            texts.append(_get(url))
    return "\n".join(texts)


def samples(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) of every sample line of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out.append((match.group(1), match.group(2) or "", float(match.group(3))))
    return out


def total(text: str, name: str, label: str = "") -> float:
    return sum(v for n, labels, v in samples(text) if n == name and label in labels)


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> Iterator[dict[str, Any]]:
    """Good readings (one hot enough to fire the sample's trigger) and one the template
    refuses (DLQ at validate), all through the real ingress."""
    good = [
        post(stack, reading("FRZ-0002", minute, -19.0)).json()["eventTrackerId"]
        for minute in range(10)
    ]
    hot = post(stack, reading("FRZ-0001", 30, -12.0)).json()["eventTrackerId"]
    broken = post(stack, {"deviceId": "FRZ-0002", "readings": {"t": -20}}).json()
    assert stack.wait_idle(timeout_s=60)
    yield {"good": good, "hot": hot, "broken": broken["eventTrackerId"]}


def test_the_dashboard_runs_and_its_url_answers(stack: Stack) -> None:
    url = stack.dashboard_url
    assert url.startswith("http://127.0.0.1:"), url
    assert not url.endswith(":8265"), "tests must not take the fixed port"
    assert "<html" in _get(url).lower()


def test_stage_metrics_appear_in_rays_metrics_export_with_values(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    wanted = {f"ray_{name}" for name in RAY_METRIC_NAMES}
    text = ""

    def exported() -> bool:
        nonlocal text
        text = ray_scrape()
        names = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n, _, _ in samples(text)}
        return wanted <= names and total(text, "ray_eventray_events_dlq_total", "validate") > 0

    wait_for(exported, timeout_s=60)  # Ray exports every ~10 s
    stored = sum(lane["events"] for lane in stack.status()["lanes"])
    assert total(text, "ray_eventray_events_stored_total") == stored >= len(traffic["good"])
    assert total(text, "ray_eventray_stage_events_total", 'stage="head"') >= stored
    assert total(text, "ray_eventray_stage_events_total", 'stage="store"') == stored
    assert total(text, "ray_eventray_events_dlq_total", 'stage="validate"') >= 1
    assert total(text, "ray_eventray_stage_batch_seconds_count", 'stage="store"') >= 1
    assert total(text, "ray_eventray_event_latency_ms_count") >= stored // 8
    assert total(text, "ray_eventray_lane_up") == len(stack.lanes())
    lag = [labels for n, labels, _ in samples(text) if n == "ray_eventray_partition_lag"]
    partitions = {re.search(r'partition="(\d+)"', labels).group(1) for labels in lag}  # type: ignore[union-attr]
    assert partitions == {str(p) for p in range(stack.settings.pipeline.partitions)}


def test_the_grafana_dashboard_uses_only_metric_names_that_exist(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        exprs += [target["expr"] for target in panel["targets"]]
    used = {n for e in exprs for n in re.findall(r"\b((?:ray_)?eventray_[a-z0-9_]+)\b", e)}
    assert len(used) >= 9
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput per stage", "lag per partition", "p99", "dlq", "trigger", "lanes"):
        assert topic in titles

    missing: set[str] = set()

    def all_exist() -> bool:
        scraped = {n for n, _, _ in samples(ray_scrape() + _get(stack.metrics_url))}
        missing.clear()
        missing.update(used - scraped)
        return not missing

    try:
        wait_for(all_exist, timeout_s=60)
    except AssertionError:
        raise AssertionError(f"not in any scrape: {sorted(missing)}") from None


def _worker_logs() -> list[dict[str, Any]]:
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    lines = []
    for path in logs.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
    return lines


def test_actors_log_json_lines_into_rays_worker_logs(stack: Stack, traffic: dict[str, Any]) -> None:
    broken = traffic["broken"]

    def dlq_line() -> bool:
        return any(line.get("eventTrackerId") == broken for line in _worker_logs())

    wait_for(dlq_line, timeout_s=30)
    lines = _worker_logs()
    [dlq] = [line for line in lines if line.get("eventTrackerId") == broken]
    assert dlq["level"] == "WARNING" and dlq["component"].startswith("lane-")
    assert dlq["logger"] == "eventray.pipeline.lane"
    # FRZ-0002's organization: the cold room under factory-alpha in the sample.
    assert dlq["org"] == "alpha-cold-room-1" and dlq["stage"] == "validate"
    assert isinstance(dlq["partition"], int) and dlq["ts"].endswith("Z")
    started = {line["component"] for line in lines if line["msg"].startswith("started on config")}
    assert {"ingress", *(n for n in stack.actors if n.startswith("lane-"))} <= started
    # No line on the happy path: no good event is named anywhere.
    text = "\n".join(orjson.dumps(line).decode() for line in lines)
    assert not any(tracker in text for tracker in [*traffic["good"], traffic["hot"]])


def _cli(stack: Stack, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", "status", *args],
        env={**plain_environment(), "EVENTRAY_DATA_DIR": str(stack.settings.data_dir)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_status_json_and_one_frame(stack: Stack, traffic: dict[str, Any]) -> None:
    answer = _cli(stack, "--json")
    assert answer.returncode == 0, answer.stderr
    status = json.loads(answer.stdout)
    assert [lane["name"] for lane in status["lanes"]] == ["lane-0"]
    assert status["unanswered"] == {} and status["store"] and status["ingress"]
    assert status["lanes"][0]["failed"] >= 1
    frame = _cli(stack, "--once")  # not a terminal: one frame, plain text
    assert frame.returncode == 0, frame.stderr
    for heading in ("lanes", "partitions", "stage time", "lane-0", "dlq"):
        assert heading in frame.stdout
    assert "\x1b[" not in frame.stdout


def _pid(actor: Any) -> int:
    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())))


def test_a_stuck_lane_is_reported_and_holds_up_no_status_or_scrape(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    [lane] = stack.lanes()
    pid = _pid(lane)
    timeout_s = stack.settings.metrics.actor_timeout_s
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        status = stack.status()
        assert time.monotonic() - started < timeout_s + 15  # bounded, not waiting for it
        assert list(status["unanswered"]) == ["lane-0"] and status["lanes"] == []
        assert "no answer within" in status["unanswered"]["lane-0"]
        assert status["store"] and status["ingress"]  # the others still answered
        started = time.monotonic()
        scrape = _get(stack.metrics_url, timeout_s=30)
        assert time.monotonic() - started < timeout_s + 15  # bounded, not waiting for it
        assert total(scrape, "eventray_actor_unanswered", 'actor="lane-0"') == 1
        answer = _cli(stack, "--json")
        assert answer.returncode == 0, answer.stderr
        assert "lane-0" in json.loads(answer.stdout)["unanswered"]
        frame = _cli(stack, "--once")
        assert "STUCK" in frame.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: stack.status()["unanswered"] == {}, timeout_s=30)
