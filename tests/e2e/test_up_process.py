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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import plain_environment

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


class Up:
    """A running `eventray up` (in a session of its own, as from a terminal) and every
    process seen below it."""

    def __init__(self, data_dir: Path, logs: Path) -> None:
        self.data_dir = data_dir
        self.stdout = logs / "up.out"
        self.stderr = logs / "up.err"
        env = {
            **plain_environment(),
            "EVENTRAY_DATA_DIR": str(data_dir),
            "EVENTRAY_INGRESS__PORT": "0",
            "EVENTRAY_METRICS__PORT": "0",
        }
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eventray.cluster.cli", "up"],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.seen: dict[int, psutil.Process] = {}

    def look(self) -> list[str]:
        """Note the processes below `up` now; their command lines."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        lines = []
        for child in list(self.seen.values()):
            with contextlib.suppress(psutil.Error):
                lines.append(" ".join(child.cmdline()))
        return lines

    def wait_for_child(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(name in line for line in self.look()):
            assert self.process.poll() is None, self.stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {name} under eventray up"
            time.sleep(0.01)

    def wait_until_up(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "eventray is up" not in self.stdout.read_text():
            assert self.process.poll() is None, self.stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "eventray up did not come up in time"
            time.sleep(0.2)
        self.look()

    def wait_exit(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            self.look()  # what starts while it stops must end too
            assert time.monotonic() < deadline, "eventray up did not exit in time"
            time.sleep(0.05)
        return self.process.returncode

    def survivors(self, timeout_s: float, names: tuple[str, ...] = ()) -> list[str]:
        """Processes seen below `up` (only those whose command line has one of ``names``,
        when given) still running after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = [
                f"{p.pid} {' '.join(p.cmdline())[:120]}"
                for p in self.seen.values()
                if _running(p) and (not names or any(n in " ".join(p.cmdline()) for n in names))
            ]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        for child in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if _running(child):
                    child.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[[], Up]]:
    started: list[Up] = []

    def start() -> Up:
        up = Up(tmp_path / f"data-{len(started)}", tmp_path)
        started.append(up)
        return up

    try:
        yield start
    finally:
        for up in started:
            up.end()


@pytest.mark.parametrize("moment", ["nats-server", "raylet"])
def test_ctrl_c_while_starting_stops_what_started(start_up: Callable[[], Up], moment: str) -> None:
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


def test_ctrl_c_once_up_drains_and_stops_everything(start_up: Callable[[], Up]) -> None:
    up = start_up()
    up.wait_until_up()
    assert any("nats-server" in line for line in up.look())
    up.process.send_signal(signal.SIGINT)
    assert up.wait_exit(timeout_s=60) == 0
    assert "draining in-flight batches and stopping" in up.stdout.read_text()
    assert up.survivors(timeout_s=5) == []
    assert not (up.data_dir / "stack.json").exists()


def test_killed_up_takes_its_servers_and_ray_with_it(start_up: Callable[[], Up]) -> None:
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
