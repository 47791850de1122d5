"""`eventray up` and `eventray demo` as a user runs them: real processes, signals, taken ports.

Every process `up` starts (nats-server, Valkey, Ray's head, its workers and agents) must end
with it: on Ctrl-C at any moment, on a clean stop, and when `up` itself is killed (kill -9).
"""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, Up, plain_environment

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("moment", ["nats-server", "raylet"])
def test_ctrl_c_while_starting_stops_what_started(start_up: Callable[..., Up], moment: str) -> None:
    up = start_up()
    up.wait_for_child(moment)
    up.process.send_signal(signal.SIGINT)
    assert up.wait_exit(timeout_s=20) == 130
    stderr = up.stderr.read_text()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "eventray: interrupted while starting; stopped what had started"
    )
    assert up.survivors(timeout_s=5) == []


def test_ctrl_c_once_up_drains_and_stops_everything(start_up: Callable[..., Up]) -> None:
    up = start_up()
    up.wait_until_up()
    assert any("nats-server" in line for line in up.look())
    up.process.send_signal(signal.SIGINT)
    assert up.wait_exit(timeout_s=60) == 0
    assert "draining in-flight batches and stopping" in up.stdout.read_text()
    assert up.survivors(timeout_s=5) == []
    assert not (up.data_dir / "stack.json").exists()


def test_killed_up_takes_its_servers_and_ray_with_it(start_up: Callable[..., Up]) -> None:
    up = start_up()
    up.wait_until_up()
    assert json.loads((up.data_dir / "stack.json").read_text())["pid"] == up.process.pid
    # Events, rule state, the config and stack.json are the owner's alone, as is the token
    # that opens the Ray cluster (Ray writes it 0644, chDB its files 0644).
    assert stat.S_IMODE(up.data_dir.stat().st_mode) == 0o700
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():  # a Ray with token authentication
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
    lines = up.look()
    assert any("nats-server" in line for line in lines)
    assert any("valkey-server" in line for line in lines)
    assert any("raylet" in line for line in lines)
    up.process.kill()
    up.process.wait(timeout=10)
    assert up.survivors(timeout_s=3, names=("nats-server", "valkey-server")) == []
    assert up.survivors(timeout_s=10) == []  # Ray's head, agents, workers, script hosts


@contextlib.contextmanager
def occupied(port: int) -> Iterator[None]:
    """``port`` on 127.0.0.1 held by a listening socket (if someone else holds it already, it
    is just as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        yield


def test_demo_takes_free_ports_when_the_default_ones_are_taken(tmp_path: Path) -> None:
    with occupied(8088), occupied(9464):  # the defaults of the ingress and metrics ports
        result = subprocess.run(
            [sys.executable, "-m", "eventray.cluster.cli", "demo", "--events", "300"],
            env={**plain_environment(), "EVENTRAY_DATA_DIR": str(tmp_path / "data")},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "ingress http://127.0.0.1:" in result.stdout
    assert "ingress http://127.0.0.1:8088;" not in result.stdout
    assert "events per organization and type:" in result.stdout
