"""The management API on the running stack: an asset created through the API reaches the
running ingress and lanes (the config notice), and an event for it is processed; the CLI goes
through the API with an API token; a delete through the API stops the ingress taking the
asset's events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventray.cluster.stack import Stack, read_stack_info
from eventray.pipeline.management import LOCAL, EntityService, TokenService
from tests.e2e.conftest import plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def _token(stack: Stack, org: str, role: str) -> str:
    wiring = stack.wiring
    config, store = wiring.config_store(), wiring.token_store()
    try:
        scope = EntityService(config).scope(LOCAL)
        return TokenService(store).create(scope, org_id=org, role=role, name=f"e2e-{role}").token
    finally:
        config.close()
        store.close()


def _cli(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args, "--data-dir",
         str(stack.settings.data_dir)],
        env={**plain_environment(), "EVENTRAY_API_TOKEN": token},
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_an_asset_created_through_the_api_is_processed_by_the_running_lanes(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]], tmp_path: Path
) -> None:
    info = read_stack_info(stack.settings.data_dir)
    assert info is not None and info.api_url == stack.api_url and stack.api_port
    editor = _token(stack, "alpha-cold-room-2", "editor")
    api = httpx.Client(base_url=f"{stack.api_url}/api/v1/manage",
                       headers={"Authorization": f"Bearer {editor}"}, timeout=60)  # fmt: skip
    before = post(stack, reading("FRZ-E2E1", 1, -18.0))
    assert before.status_code == 422  # no such asset yet
    created = api.post("/assets", json={
        "id": "freezer-e2e", "orgId": "alpha-cold-room-2", "assetUUID": "FRZ-E2E1",
        "name": "Freezer e2e", "templateId": "freezer-json", "routeGroupIds": ["rg-cold-chain"],
        "tags": ["freezer"]})  # fmt: skip
    assert created.status_code == 201, created.text
    assert stack.wait_revision(created.json()["storeRevision"])  # the notice reached them all
    answer = post(stack, reading("FRZ-E2E1", 2, -18.5))
    assert answer.status_code == 201, answer.text
    tracker = answer.json()["eventTrackerId"]
    sql = f"SELECT asset_id, org_id FROM {{db}}.events WHERE event_tracker_id = '{tracker}'"
    wait_for(lambda: bool(select(sql)))
    assert select(sql) == [{"asset_id": "freezer-e2e", "org_id": "alpha-cold-room-2"}]

    # The CLI through the API, with the token's scope.
    listed = _cli(stack, editor, "get", "assets")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {d["id"] for d in json.loads(listed.stdout)["items"]} == {
        "freezer-03", "lora-th-01", "freezer-e2e"
    }  # fmt: skip
    outside = _cli(stack, editor, "get", "asset", "freezer-01")
    assert outside.returncode == 1 and "404" in outside.stderr
    # the answer names the assets of the token's scope (nearest first), never freezer-01's room
    assert "valid: freezer-03, freezer-e2e, lora-th-01" in outside.stderr
    edited = tmp_path / "edit.json"
    edited.write_text(json.dumps({**api.get("/assets/freezer-e2e").json(), "kind": "Asset",
                                  "name": "Freezer e2e (renamed)"}))  # fmt: skip
    applied = _cli(stack, editor, "apply", "-f", str(edited))
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert json.loads(applied.stdout)["via"] == "api"
    history = _cli(stack, editor, "history", "asset", "freezer-e2e")
    items = json.loads(history.stdout)["items"]
    assert [(h["op"], h["author"]["name"]) for h in items] == [
        ("create", "e2e-editor"), ("update", "e2e-editor")
    ]  # fmt: skip

    # Deleted through the API: the running ingress stops taking its events.
    deleted = api.delete("/assets/freezer-e2e")
    assert deleted.status_code == 200, deleted.text
    assert stack.wait_revision(deleted.json()["storeRevision"])
    assert post(stack, reading("FRZ-E2E1", 3, -18.0)).status_code == 422
    api.close()
    spec = httpx.get(f"{stack.api_url}/openapi.json").json()
    assert spec["paths"]["/api/v1/events"]["servers"][0]["url"] == stack.ingress_url


def test_an_ingest_token_sends_events_to_an_api_token_data_source_until_it_is_revoked(
    stack: Stack, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    admin = _token(stack, "factory-alpha", "admin")
    api = httpx.Client(base_url=f"{stack.api_url}/api/v1/manage",
                       headers={"Authorization": f"Bearer {admin}"}, timeout=60)  # fmt: skip
    created = api.post("/data-sources", json={
        "id": "ds-token", "orgId": "factory-alpha", "name": "Gateways with ingest tokens",
        "auth": {"type": "apiToken"}, "assetBind": {"uuidFields": ["deviceId"]}})  # fmt: skip
    assert created.status_code == 201, created.text
    assert stack.wait_revision(created.json()["storeRevision"])
    issued = api.post("/tokens", json={"orgId": "factory-alpha", "role": "ingest"})
    assert issued.status_code == 201, issued.text
    ingest = issued.json()["token"]
    sibling = _token(stack, "depot-beta", "ingest")

    def send(token: str, minute: int) -> Any:
        return post(stack, reading("FRZ-0003", minute, -18.0), ds="ds-token",
                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    accepted = send(ingest, 40)
    assert accepted.status_code == 201, accepted.text
    tracker = accepted.json()["eventTrackerId"]
    sql = f"SELECT asset_id FROM {{db}}.events WHERE event_tracker_id = '{tracker}'"
    wait_for(lambda: bool(select(sql)))
    assert select(sql) == [{"asset_id": "freezer-03"}]
    # An ingest token of a sibling organization, and the admin's own token, are refused.
    assert send(sibling, 41).status_code == 401
    refused = send(admin, 42)
    assert refused.status_code == 401 and "only ingest tokens" in refused.text
    # The management API refuses the ingest token whatever it asks.
    assert httpx.get(f"{stack.api_url}/api/v1/manage/assets",
                     headers={"Authorization": f"Bearer {ingest}"}).status_code == 403  # fmt: skip
    revoked = api.delete(f"/tokens/{issued.json()['id']}")
    assert revoked.status_code == 200, revoked.text
    wait_for(lambda: send(ingest, 43).status_code == 401, timeout_s=10)
    api.close()
