"""Secrets on the running stack: the sample's ops webhook sends ``Bearer
{{secrets.OPS_TOKEN}}`` (acme-foods' secret), and the value it sends follows every change
without a restart: the environment's when nothing else has one, the secrets file's over it,
the encrypted store's (set through the management API) over both, a rotation through the API,
then the file's again once the stored one is deleted. No value written through the API is in
the data directory, a stored row, a Ray log or a command line; the CLI goes through the API."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from eventray.cluster.stack import Stack
from eventray.pipeline.adapters.secrets_file import write_secrets_file
from eventray.pipeline.management import LOCAL, EntityService, TokenService
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import OPS_TOKEN, SECRETS_KEY, plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
ENV_VALUE = "env-ops-token-2d9e"
STORED = ["api-ops-token-v1-8b31", "api-ops-token-v2-c47a", "cli-ops-token-v3-19f0"]


@pytest.fixture(scope="module", autouse=True)
def ops_token_in_the_environment() -> Iterator[None]:
    """Set before the module's stack starts (autouse: first in its scope), so the lanes'
    processes inherit it, as from the shell that runs ``eventray up``."""
    variable = "EVENTRAY_SECRET__acme-foods__OPS_TOKEN"
    os.environ[variable] = ENV_VALUE
    try:
        yield
    finally:
        os.environ.pop(variable, None)


def _token(stack: Stack, org: str, role: str) -> str:
    wiring = stack.wiring
    config, store = wiring.config_store(), wiring.token_store()
    try:
        scope = EntityService(config).scope(LOCAL)
        return TokenService(store).create(scope, org_id=org, role=role, name=f"e2e-{role}").token
    finally:
        config.close()
        store.close()


def _delivers(stack: Stack, sink: WebhookSink, bearer: str, minute: list[int]) -> list[str]:
    """Post a critical reading every second until the ops webhook sends ``Bearer <bearer>``
    (a change applies within the lanes' 1 s check); the trackers posted."""
    trackers: list[str] = []
    deadline = time.monotonic() + 45
    while True:
        minute[0] = (minute[0] + 1) % 60
        answer = post(stack, reading("FRZ-0003", minute[0], -9.0))
        assert answer.status_code == 201, answer.text
        trackers.append(answer.json()["eventTrackerId"])
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            sent = [r["headers"].get("Authorization") for r in list(sink.requests)
                    if r["path"] == "/hooks/ops"]  # fmt: skip
            if f"Bearer {bearer}" in sent:
                return trackers
            time.sleep(0.05)
        assert time.monotonic() < deadline, f"the ops webhook never sent the new value: {sent}"


def test_the_ops_webhook_follows_every_secret_change_without_a_restart(
    stack: Stack, sink: WebhookSink, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    minute = [0]
    sink.requests.clear()
    trackers = _delivers(stack, sink, OPS_TOKEN, minute)  # the file's, over the environment's
    write_secrets_file(stack.settings.secrets_path, {})
    trackers += _delivers(stack, sink, ENV_VALUE, minute)  # the environment's: the fallback
    write_secrets_file(stack.settings.secrets_path, {"acme-foods": {"OPS_TOKEN": OPS_TOKEN}})
    trackers += _delivers(stack, sink, OPS_TOKEN, minute)

    editor = _token(stack, "acme-foods", "editor")
    api = httpx.Client(base_url=f"{stack.api_url}/api/v1/manage",
                       headers={"Authorization": f"Bearer {editor}"}, timeout=60)  # fmt: skip
    with api:
        for value in STORED[:2]:  # set, then rotated: the store's wins over the file's
            answer = api.put("/secrets/acme-foods/OPS_TOKEN", json={"value": value})
            assert answer.status_code in (200, 201), answer.text
            assert value not in answer.text
            trackers += _delivers(stack, sink, value, minute)
        # the CLI through the API (the token's scope), the value on standard input
        cli = _cli(stack, editor, "secrets", "set", "acme-foods", "OPS_TOKEN", stdin=STORED[2])
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert json.loads(cli.stdout)["created"] is False
        trackers += _delivers(stack, sink, STORED[2], minute)
        listed = _cli(stack, editor, "secrets", "list")
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert [(i["orgId"], i["name"]) for i in json.loads(listed.stdout)["items"]] == [
            ("acme-foods", "OPS_TOKEN")]  # fmt: skip
        changes = api.get("/secrets/changes").json()["items"]
        assert [(c["op"], c["author"]["name"]) for c in changes] == [("set", "e2e-editor")] * 3
        assert api.delete("/secrets/acme-foods/OPS_TOKEN").status_code == 200
    trackers += _delivers(stack, sink, OPS_TOKEN, minute)  # the file's again

    quoted = ",".join(f"'{t}'" for t in trackers)
    wait_for(lambda: len(select(
        f"SELECT DISTINCT event_tracker_id FROM {{db}}.logs_trigger FINAL "
        f"WHERE event_tracker_id IN ({quoted})")) == len(trackers))  # fmt: skip
    rows = select(f"SELECT * FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id IN ({quoted})")
    stored_text = orjson.dumps(rows, default=str).decode()
    for value in (*STORED, ENV_VALUE, OPS_TOKEN):
        assert value not in stored_text
    _nowhere(stack, [*STORED, SECRETS_KEY])


def _cli(stack: Stack, token: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args, "--data-dir",
         str(stack.settings.data_dir)],
        env={**plain_environment(), "EVENTRAY_API_TOKEN": token}, input=stdin,
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def _nowhere(stack: Stack, values: list[str]) -> None:
    """No file of the data directory (the secret store included: sealed values only), no Ray
    log and no command line holds any of ``values``."""
    import psutil
    import ray

    files = [p for p in stack.settings.data_dir.rglob("*") if p.is_file()]
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    files += [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "secrets.enc" for p in files) and any(p.suffix == ".err" for p in files)
    for path in files:
        with contextlib.suppress(OSError):
            text = path.read_bytes()
            assert not any(value.encode() in text for value in values), path
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            shown = " ".join(process.cmdline())
            assert not any(value in shown for value in values), process.name()
