"""Stored data, the DLQ and redrive through the management API of the running stack (Ray, NATS
JetStream, Valkey, chDB), with API tokens: events queried by an EVA field name within the
token's room, an event's story, and a failed event redriven after its template was fixed
through the API (the redrive runs in the replay actor with its own NATS user), stored once;
the CLI does the same through the API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventray.cluster.stack import Stack
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import nats_refusals, plain_environment, wait_for
from tests.e2e.test_cold_chain import post, reading
from tests.e2e.test_management import _token
from tests.e2e.test_replay import BROKEN, PASS, send, tenant

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
ROOM_1, ROOM_2 = "alpha-cold-room-1", "alpha-cold-room-2"
Select = Callable[[str], list[dict[str, Any]]]


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{stack.api_url}/api/v1/manage",
                        headers={"Authorization": f"Bearer {token}"}, timeout=120)  # fmt: skip


def cli(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventray.cluster.cli", *args, "--data-dir",
         str(stack.settings.data_dir)],
        env={**plain_environment(), "EVENTRAY_API_TOKEN": token},
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def readings(stack: Stack) -> Iterator[dict[str, str]]:
    """Three freezer readings (room 1 at -18 and -26.5, room 2 at -30), stored; their
    trackers."""
    trackers = {}
    for name, device, minute, temperature in (("warm-1", "FRZ-0001", 40, -18.0),
                                              ("cold-1", "FRZ-0001", 41, -26.5),
                                              ("cold-2", "FRZ-0003", 42, -30.0)):  # fmt: skip
        answer = post(stack, reading(device, minute, temperature))
        assert answer.status_code == 201, answer.text
        trackers[name] = answer.json()["eventTrackerId"]
    yield trackers


def test_events_by_an_eva_field_name_and_a_story_within_the_token_s_room(
    stack: Stack, select: Select, readings: dict[str, str]
) -> None:
    room = client(stack, _token(stack, ROOM_1, "viewer"))
    listed = ", ".join(f"'{t}'" for t in readings.values())
    sql = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id IN ({listed})"
    wait_for(lambda: select(sql) == [{"n": 3}])
    cold = room.get("/events", params={"where": "temperature < -25", "limit": 1000})
    assert cold.status_code == 200, cold.text
    found = {r["event_tracker_id"] for r in cold.json()["rows"]}
    assert readings["cold-1"] in found and readings["cold-2"] not in found  # room 2's: hidden
    assert readings["warm-1"] not in found
    assert {r["org_id"] for r in cold.json()["rows"]} == {ROOM_1}
    csv = room.get("/events", params={"where": "temperature < -25", "format": "csv",
                                      "all": "true", "limit": 1})  # fmt: skip
    assert csv.status_code == 200 and readings["cold-1"] in csv.text
    story = room.get(f"/events/{readings['cold-1']}/story")
    assert story.status_code == 200, story.text
    assert "event" in [step["kind"] for step in story.json()["steps"]]
    assert room.get(f"/events/{readings['cold-2']}/story").status_code == 404
    assert room.get("/events", params={"orgId": ROOM_2}).status_code == 404
    rules = room.get("/logs/rules", params={"eventTrackerId": readings["cold-1"]})
    assert rules.status_code == 200 and rules.json()["rows"], rules.text
    # the CLI through the API, with the same scope
    done = cli(stack, _token(stack, ROOM_1, "viewer"), "events", "query", "--where",
               "temperature < -25", "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert {r["event_tracker_id"] for r in json.loads(done.stdout)["rows"]} == found
    room.close()


def test_a_dlq_entry_is_redriven_after_its_template_is_fixed_through_the_api(
    stack: Stack, select: Select, sink: WebhookSink
) -> None:
    assert stack.wait_revision(stack.apply(tenant("alpha", sink, BROKEN) + tenant("beta", sink,
                                                                                   BROKEN)))  # fmt: skip
    good = send(stack, "alpha", 1)
    bad = send(stack, "alpha", 2, bad=True)
    beta = send(stack, "beta", 2, bad=True)
    wait_for(lambda: len(select(
        f"SELECT 1 FROM {{db}}.dlq FINAL WHERE event_tracker_id IN ('{bad}', '{beta}')")) == 2)  # fmt: skip
    editor_token = _token(stack, "rp-alpha", "editor")
    editor = client(stack, editor_token)
    listed = editor.get("/dlq").json()["items"]
    assert [e["eventTrackerId"] for e in listed] == [bad], listed
    assert editor.get("/dlq", params={"orgId": "rp-beta"}).status_code == 404
    # Fix the template through the API, then redrive: a dry run first, then once.
    template = editor.get("/asset-templates/tpl-rp-alpha").json()
    fixed = editor.put("/asset-templates/tpl-rp-alpha", json={**template, "scriptConversion": PASS})
    assert fixed.status_code == 200, fixed.text
    assert stack.wait_revision(fixed.json()["storeRevision"])
    dry = editor.post("/dlq/redrive", params={"dryRun": "true"}, json={"eventTrackerId": bad})
    assert [i["outcome"] for i in dry.json()["items"]] == ["would-redrive"], dry.text
    done = editor.post("/dlq/redrive", params={"wait": 60}, json={"eventTrackerId": bad})
    assert done.status_code == 200, done.text
    assert done.json()["summary"] | {"redriveId": ""} == {
        "redriveId": "", "dryRun": False, "redriven": 1, "wouldRedrive": 0, "skipped": 0,
        "failed": 0, "processed": True}  # fmt: skip
    stored = editor.get("/events", params={"eventTrackerId": bad}).json()["rows"]
    assert [r["event_tracker_id"] for r in stored] == [bad]
    raw = select(f"SELECT count() AS n FROM {{db}}.events WHERE event_tracker_id = '{bad}'")
    assert raw == [{"n": 1}]  # stored once, not merely collapsed by FINAL
    again = editor.post("/dlq/redrive", params={"wait": 10}, json={"all": True}).json()
    assert again["summary"]["redriven"] == 0  # nothing pending in rp-alpha; beta's not seen
    record = editor.get("/dlq", params={"redriven": "yes"}).json()["items"]
    assert [(e["eventTrackerId"], e["redriven"]["by"].split(" ")[0]) for e in record] == [
        (bad, "api:e2e-editor")]  # fmt: skip
    assert {r["event_tracker_id"] for r in editor.get("/events").json()["rows"]} == {good, bad}
    # beta's entry is still pending; a replay of beta by alpha's editor: 404, as unknown
    assert select(f"SELECT 1 FROM {{db}}.dlq_redrive WHERE event_tracker_id = '{beta}'") == []
    assert editor.post("/replays", json={"orgId": "rp-beta", "fromSeq": 1}).status_code == 404
    plan = editor.post("/replays", params={"dryRun": "true"},
                       json={"orgId": "rp-alpha", "fromSeq": 1})  # fmt: skip
    assert plan.status_code == 200 and plan.json()["events"] == 2, plan.text
    # the CLI through the API: the redrive record, read with the token's scope
    listed_cli = cli(stack, editor_token, "dlq", "list", "--redriven", "yes")
    assert listed_cli.returncode == 0, listed_cli.stderr[-2000:]
    assert [json.loads(line)["eventTrackerId"] for line in listed_cli.stdout.splitlines()] == [bad]
    editor.close()
    assert nats_refusals(stack) == []  # the replay actor's user was enough for its work
