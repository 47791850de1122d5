"""Two stacks on one Ray cluster, told apart by ``ray.namespace``.

One head (``ray start --head`` on free loopback ports, its own temp dir) and two ``eventray up``
processes attached to it (``EVENTRAY_RAY__ADDRESS``) with their own data directories, free
ports and namespaces ``a`` and ``b``. Both name their actors ``store``, ``ingress``,
``lane-0``...: in one namespace the second ``up`` is refused (``ActorAlreadyExistsError``:
the name ``store`` is taken; this test with one namespace fails that way). Each stack
processes its own events, and ``eventray status`` and ``events query`` of each (attaching by
its ``stack.json``) see its own lanes and events only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from eventray.cluster.services.procs import free_port, wait_until
from tests.e2e.conftest import REPO, Up, plain_environment, wait_for
from tests.e2e.test_cold_chain import GATEWAY_KEY, reading

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A head's GCS address; every port it opens is a free one, its files in a temp dir of its
    own (short: Ray's socket paths must fit in 107 bytes). A second try when the first head
    gives up starting: on this shared 2-core machine Ray's own start-up deadline can pass
    under load ("The current node timed out during startup")."""
    temp = Path(tempfile.mkdtemp(prefix="er-ray-", dir="/tmp"))
    heads: list[subprocess.Popen[bytes]] = []
    try:
        for attempt in range(2):
            port = free_port()
            log = temp / f"ray-start-{attempt}.log"
            head = _start_head(port, temp, log)
            heads.append(head)
            wait_until(lambda: _started_or_gone(head, log), timeout_s=90)  # noqa: B023
            if head.poll() is None and "Ray runtime started" in log.read_text():
                break
            _stop_head(heads[-1])
        else:
            pytest.fail(f"the Ray head did not come up:\n{log.read_text()[-3000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        for started in heads:
            _stop_head(started)
        shutil.rmtree(temp, ignore_errors=True)


def _started_or_gone(head: subprocess.Popen[bytes], log: Path) -> bool:
    return "Ray runtime started" in log.read_text() or head.poll() is not None


def _start_head(port: int, temp: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=8",  # logical: room for two stacks' actors whatever they declare
                f"--temp-dir={temp}",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                "--disable-usage-stats",
            ],
            env={
                **plain_environment(),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_head(head: subprocess.Popen[bytes]) -> None:
    """The head and every process of its session (the GCS, the raylet, their workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):  # any of the head's processes left
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)


def _cli(up: Up, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args, "--data-dir", str(up.data_dir)],
        env=plain_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _ingress(up: Up) -> str:
    return str(json.loads((up.data_dir / "stack.json").read_text())["ingress_url"])


def _post(up: Up, device: str, minute: int) -> str:
    answer = requests.post(
        f"{_ingress(up)}/api/v1/events?ds=ds-gateway-http",
        json=reading(device, minute, -19.0),
        headers=GATEWAY_KEY,
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["eventTrackerId"])


def _stored(up: Up) -> set[str]:
    out = _cli(up, "events", "query", "--org", "acme-foods", "--children", "--limit", "100")
    return {
        json.loads(line)["event_tracker_id"] for line in out.splitlines() if line.startswith("{")
    }


@pytest.mark.timeout(600)  # two stacks start on 2 shared cores: 3-4 min measured
def test_two_stacks_share_one_ray_cluster(ray_head: str, tmp_path: Path) -> None:
    started: list[Up] = []

    def start(namespace: str, partitions: int) -> Up:
        up = Up(
            tmp_path / f"data-{namespace}",
            tmp_path,
            args=("--config", str(REPO / "config/samples/tenant")),
            env={
                "EVENTRAY_RAY__ADDRESS": ray_head,
                "EVENTRAY_RAY__NAMESPACE": namespace,
                "EVENTRAY_PIPELINE__PARTITIONS": str(partitions),
                "EVENTRAY_PIPELINE__LANES": "1",
                # lean, two stacks on 2 shared cores: the store, the ingress and one lane each
                "EVENTRAY_SCRIPTS__ISOLATE": "false",
                "EVENTRAY_API__ENABLED": "false",
                "EVENTRAY_METRICS__ENABLED": "false",
                "EVENTRAY_MQTT__ENABLED": "false",
            },
            name=f"up-{namespace}",
        )
        started.append(up)
        return up

    try:
        a, b = start("a", 2), start("b", 3)
        a.wait_until_up(timeout_s=300)  # both start at once: ~1-2 min each, slower under load
        b.wait_until_up(timeout_s=300)
        for up, namespace in ((a, "a"), (b, "b")):
            assert json.loads((up.data_dir / "stack.json").read_text())["namespace"] == namespace
        sent: dict[str, set[str]] = {
            "a": {_post(a, "FRZ-0001", m) for m in range(3)},
            "b": {_post(b, "FRZ-0002", m) for m in range(5)},
        }
        for up, namespace in ((a, "a"), (b, "b")):
            check: Callable[[], bool] = lambda up=up, ns=namespace: _stored(up) == sent[ns]  # noqa: E731
            wait_for(check, timeout_s=90)
        status = {
            ns: json.loads(out[out.index("{") :])
            for ns, out in (("a", _cli(a, "status", "--json")), ("b", _cli(b, "status", "--json")))
        }
        assert [lane["partitions"] for lane in status["a"]["lanes"]] == [[0, 1]]
        assert [lane["partitions"] for lane in status["b"]["lanes"]] == [[0, 1, 2]]
        assert sum(lane["events"] for lane in status["a"]["lanes"]) == 3
        assert sum(lane["events"] for lane in status["b"]["lanes"]) == 5
    finally:
        for up in started:
            if up.process.poll() is None:
                up.process.send_signal(signal.SIGINT)  # a drained stop: its actors go with it
        for up in started:
            try:
                up.wait_exit(timeout_s=60)
            finally:
                up.end()
