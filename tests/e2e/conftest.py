"""One embedded stack (NATS, Valkey, chDB, Ray on loopback) for the end-to-end tests, and
`eventray up` as a user runs it (:class:`Up`, the ``start_up`` fixture)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents
from eventray.config.settings import load_settings
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.testing.mail_sink import MailSink
from eventray.testing.sink import WebhookSink

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]

OPS_TOKEN = "e2e-ops-token-4f1c"
# The stacks' secret store key (base64 of 32 bytes), so a module can set secrets through the API.
SECRETS_KEY = "ZTJlLXNlY3JldHMta2V5LTMyLWJ5dGVzLWxvbmctMDE="


@pytest.fixture(scope="session")
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as running:
        yield running


@pytest.fixture(scope="session")
def mail() -> Iterator[MailSink]:
    with MailSink() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sink: WebhookSink,
    mail: MailSink,
) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("stack")
    # One stack per test module (not per session), so no stack is up while
    # test_job_submit runs its own `ray start --head`. A module may set STACK_PIPELINE to
    # change the topology (e.g. rules evaluated in the lanes), STACK_RAY the Ray settings
    # (e.g. the dashboard on).
    pipeline = {"partitions": 2, "lanes": 1, "batch_size": 500}
    pipeline.update(getattr(request.module, "STACK_PIPELINE", {}))
    settings = load_settings(
        data_dir=data,
        pipeline=pipeline,
        ingress={"port": 0},
        metrics={"port": 0},
        mqtt={"port": 0},
        api={"port": 0},
        nats={"ack_wait_s": 5.0},
        triggers={
            "max_attempts": 3,
            "backoff_base_s": 0.1,
            "backoff_max_s": 0.5,
            "allow_networks": ("127.0.0.1/32",),  # the sinks listen on loopback
        },
        ray={"num_cpus": 2, **getattr(request.module, "STACK_RAY", {})},
        secrets={"key": SECRETS_KEY},
    )
    # The sample's ops webhook sends "Bearer {{secrets.OPS_TOKEN}}" (acme-foods' secret).
    write_secrets_file(settings.secrets_path, {"acme-foods": {"OPS_TOKEN": OPS_TOKEN}})
    running = Stack(settings)
    try:
        running.start()
        documents = sample_documents(sink.url, mail.port)
        for doc in documents:  # a short cooldown, so a test can wait one out
            if doc.get("id") == "factory-alpha-high-temp":
                doc["parameters"] = {"threshold": -15, "cooldownSeconds": 3}
        running.apply(documents)
        time.sleep(1.0)  # actors reload on the config message
        yield running
    finally:
        running.stop()


@pytest.fixture
def select(stack: Stack) -> Callable[[str], list[dict[str, Any]]]:
    import ray

    def run(sql: str) -> list[dict[str, Any]]:
        return list(ray.get(stack.actors["store"].select.remote(sql.format(db="eventray"))))

    return run


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def nats_refusals(stack: Stack) -> list[str]:
    """What the embedded nats-server refused a role (its log's ``Publish Violation`` and
    ``Subscription Violation`` lines): each role's permissions must cover all it does."""
    log = stack.settings.data_dir / "nats" / "nats-server.log"
    return [line for line in log.read_text().splitlines() if "Violation" in line]


def plain_environment() -> dict[str, str]:
    """The environment of a user's shell: none of the RAY_* variables that starting Ray put
    into this process (RAY_AUTH_MODE among them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


class Up:
    """A running `eventray up` (in a session of its own, as from a terminal) and every
    process seen below it."""

    def __init__(
        self,
        data_dir: Path,
        logs: Path,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        name: str = "up",
    ) -> None:
        self.data_dir = data_dir
        self.stdout = logs / f"{name}.out"
        self.stderr = logs / f"{name}.err"
        environment = {
            **plain_environment(),
            "EVENTRAY_DATA_DIR": str(data_dir),
            "EVENTRAY_INGRESS__PORT": "0",
            "EVENTRAY_METRICS__PORT": "0",
            "EVENTRAY_MQTT__PORT": "0",
            "EVENTRAY_API__PORT": "0",
            **(env or {}),
        }
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eventray.cluster.cli", "up", *args],
                env=environment,
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
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """Starts `eventray up`: on a data directory of its own unless ``data_dir`` is given (a
    restart), with extra ``args`` and environment ``env``."""
    started: list[Up] = []

    def start(
        *,
        data_dir: Path | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> Up:
        n = len(started)
        up = Up(data_dir or tmp_path / f"data-{n}", tmp_path, args=args, env=env, name=f"up-{n}")
        started.append(up)
        return up

    try:
        yield start
    finally:
        for up in started:
            up.end()
