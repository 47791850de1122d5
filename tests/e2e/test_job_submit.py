"""`ray job submit --working-dir . -- <entry point>` against a local `ray start --head`.

The head runs on free loopback ports (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it there) and
is stopped by killing its process group, so no other Ray on the machine is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventray.cluster.services.procs import free_port, wait_until
from tests.e2e.conftest import plain_environment

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(*, job_client: bool = False) -> dict[str, str]:
    """The README's commands, from a user's shell. The venv's bin first: the head's workers
    and the job's entry point run this Python."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**plain_environment(), "PATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if job_client:
        # `ray start` turns on token authentication with the saved token, but Ray's job client
        # sends it only when told to (eventray's own commands need no such variable).
        env["RAY_AUTH_MODE"] = "token"
    return env


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, dashboard = free_port(), free_port()
    log = tmp_path_factory.mktemp("ray-head") / "ray-start.log"
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={free_port()}",  # jobs go through it; not 52365
            "--disable-usage-stats",
        ],
        # Stopped by SIGTERM: without this, the head waits 30 s for a drain nothing needs.
        env={**_env(), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=1) as answer:
                return bool(answer.status == 200)
        except urllib.error.HTTPError as refused:  # 401 without a token: it is up
            return refused.code == 401

    try:
        assert wait_until(up, timeout_s=90), (
            f"the Ray head did not come up:\n{log.read_text()[-3000:]}"
        )
        yield url
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def test_demo_runs_as_a_submitted_job(ray_head: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            ray_head,
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "-m",
            "eventray.cluster.cli",
            "demo",
            "--events",
            "1500",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=_env(job_client=True),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=REPO,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "succeeded" in output
    assert "events per organization and type:" in output
    assert "alpha-cold-room-1  temperature" in output
    assert "factory-alpha-escalation" in output  # rules ran inside the job's actors
