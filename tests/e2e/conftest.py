"""One embedded stack (NATS, Valkey, chDB, Ray on loopback) for the end-to-end tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.stack import Stack
from eventray.cluster.stack_cli import sample_documents
from eventray.config.settings import load_settings
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.testing.mail_sink import MailSink
from eventray.testing.sink import WebhookSink

pytestmark = pytest.mark.ray

OPS_TOKEN = "e2e-ops-token-4f1c"


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
    # change the topology (e.g. rules evaluated in the lanes).
    pipeline = {"partitions": 2, "lanes": 1, "batch_size": 500}
    pipeline.update(getattr(request.module, "STACK_PIPELINE", {}))
    settings = load_settings(
        data_dir=data,
        pipeline=pipeline,
        ingress={"port": 0},
        metrics={"port": 0},
        nats={"ack_wait_s": 5.0},
        triggers={"max_attempts": 3, "backoff_base_s": 0.1, "backoff_max_s": 0.5},
        ray={"num_cpus": 2},
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
