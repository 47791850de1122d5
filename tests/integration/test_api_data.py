"""The management API's routes over stored data, the DLQ and replay, over real HTTP, against
real data (``datakit``: the sample tenant's traffic through the real processor, in embedded
chDB; the real replay service over the stream's twin): events by an EVA field name in every
format with cursors and whole exports, each log kind, an event's story, the DLQ with redrive
(dry run, then once), replay (dry run, keep/fresh, triggers), and the roles that may."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from eventray.pipeline.storage.logs import LOG_KINDS
from tests.integration.apikit import RunningApi, running_api, sample_documents
from tests.integration.datakit import FAILING, StoredData, data_routers, stored_data

pytestmark = pytest.mark.services

ROOM_1 = "alpha-cold-room-1"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredData]:
    with stored_data(sample_documents(), tmp_path_factory.mktemp("chdb")) as found:
        yield found


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, data: StoredData) -> Iterator[RunningApi]:
    yield from running_api(tmp_path_factory.mktemp("api"), routers=data_routers(),
                           state=data.state)  # fmt: skip


@pytest.fixture(scope="module")
def tokens(api: RunningApi) -> dict[str, str]:
    return {
        "root": api.token("mapex", "viewer"),
        "room": api.token(ROOM_1, "viewer"),
        "editor": api.token(ROOM_1, "editor"),
        "ingest": api.token(ROOM_1, "ingest"),
    }


def rows(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["rows"]
    return found


def stored_events(data: StoredData, where: Any = lambda r: True) -> set[str]:
    return {r["event_tracker_id"] for r in data.truth["events"] if where(r)}


def test_events_by_an_eva_field_name_in_every_format(
    api: RunningApi, data: StoredData, tokens: dict[str, str]
) -> None:
    root = tokens["root"]
    every = rows(api.call("GET", "/events", root, params={"limit": 10_000}))
    assert {r["event_tracker_id"] for r in every} == stored_events(data)
    cold = rows(api.call("GET", "/events", root, params={"where": "temperature < -19",
                                                         "limit": 10_000}))  # fmt: skip
    assert cold and len(cold) < len(every)
    assert all(min(r["eva_number"].values()) < -19 for r in cold)
    two = rows(api.call("GET", "/events", root, params=[("where", "temperature < -19"),
                                                        ("where", "temperature > -19.5"),
                                                        ("limit", "10000")]))  # fmt: skip
    assert two and {r["event_tracker_id"] for r in two} < {r["event_tracker_id"] for r in cold}
    # a page, its cursor (body and header), and the next page
    first = api.call("GET", "/events", root, params={"limit": 7})
    body = first.json()
    assert len(body["rows"]) == 7 and body["nextCursor"] == first.headers["X-Next-Cursor"]
    second = rows(api.call("GET", "/events", root, params={"limit": 7,
                                                          "cursor": body["nextCursor"]}))  # fmt: skip
    assert [r["event_tracker_id"] for r in body["rows"] + second] == [
        r["event_tracker_id"] for r in every[:14]]  # fmt: skip
    # jsonl: a page then its cursor; csv with all=true: every row, streamed page by page
    lines = api.call("GET", "/events", root, params={"limit": 5, "format": "jsonl"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    parsed = [orjson.loads(line) for line in lines.text.splitlines()]
    assert len(parsed) == 6 and parsed[-1] == {"nextCursor": lines.headers["X-Next-Cursor"]}
    export = api.call("GET", "/events", root, params={"limit": 9, "format": "csv", "all": "true",
                                                      "orgId": ROOM_1, "includeChildren": True})  # fmt: skip
    assert export.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert {r["event_tracker_id"] for r in table} == stored_events(
        data, lambda r: r["org_id"] == ROOM_1
    )
    assert "X-Next-Cursor" not in export.headers


def test_refusals_name_the_parameter(api: RunningApi, tokens: dict[str, str]) -> None:
    root = tokens["root"]
    bad = api.call("GET", "/events", root, params={"where": "temperature ~ 3"})
    assert bad.status_code == 422 and bad.json()["issues"][0]["path"] == "query:where[0]"
    assert "unknown operator" in bad.json()["error"]
    assert api.call("GET", "/events", root, params={"cursor": "nope"}).status_code == 422
    unknown = api.call("GET", "/events", root, params={"orgId": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown organization 'nope'"
    wrong = api.call("GET", "/logs/triggers", root, params={"stage": "bind"})
    assert wrong.status_code == 422 and "stage" in wrong.text
    assert wrong.json()["issues"][0]["path"] == "query:stage"
    odd = api.call("GET", "/logs/routers", root, params={"businessRuleId": "x"})
    assert odd.json()["issues"][0]["path"] == "query:businessRuleId"
    lonely = api.call("GET", "/events", root, params={"includeChildren": True})
    assert lonely.json()["issues"][0]["path"] == "query:includeChildren"
    assert api.call("GET", "/logs/nope", root).status_code == 422


def test_every_log_kind_and_the_story(
    api: RunningApi, data: StoredData, tokens: dict[str, str]
) -> None:
    root = tokens["root"]
    for kind, table in LOG_KINDS.items():
        found = rows(api.call("GET", f"/logs/{kind}", root, params={"limit": 10_000}))
        assert len(found) == len({tuple(sorted((k, str(v)) for k, v in r.items()))
                                  for r in found}), kind  # fmt: skip
        truth = {r["event_tracker_id"] for r in data.truth[table]}
        assert {r["event_tracker_id"] for r in found} == truth, kind
    failed = rows(api.call("GET", "/logs/dlq", root, params={"stage": "validate"}))
    assert {r["event_tracker_id"] for r in failed} >= set(FAILING.values())
    newest = rows(api.call("GET", "/logs/rules", root, params={"newestFirst": True, "limit": 3}))
    assert [r["created"] for r in newest] == sorted((r["created"] for r in newest), reverse=True)
    story = api.call("GET", "/events/fail-a/story", root)
    assert story.status_code == 200
    kinds = [step["kind"] for step in story.json()["steps"]]
    assert "dlq" in kinds, kinds
    tracker = next(iter(stored_events(data)))
    assert api.call("GET", f"/events/{tracker}/story", root).status_code == 200
    assert api.call("GET", "/events/never-seen/story", root).status_code == 404


def test_dlq_redrive_and_replay(api: RunningApi, data: StoredData, tokens: dict[str, str]) -> None:
    editor, viewer = tokens["editor"], tokens["room"]
    listed = api.call("GET", "/dlq", viewer)
    assert listed.status_code == 200
    entries = listed.json()["items"]
    assert {e["eventTrackerId"] for e in entries} == {"fail-a"}  # room 1's only
    assert api.call("POST", "/dlq/redrive", viewer, json={"eventTrackerId": "fail-a"}
                    ).status_code == 403  # fmt: skip
    assert api.call("POST", "/dlq/redrive", editor, json={}).status_code == 422  # no selection
    dry = api.call("POST", "/dlq/redrive?dryRun=true", editor, json={"eventTrackerId": "fail-a"})
    assert dry.status_code == 200, dry.text
    assert [i["outcome"] for i in dry.json()["items"]] == ["would-redrive"]
    before = len(data.stream.log(0))
    done = api.call("POST", "/dlq/redrive", editor, json={"eventTrackerId": "fail-a"}).json()
    assert done["summary"]["redriven"] == 1 and len(data.stream.log(0)) == before + 1
    again = api.call("POST", "/dlq/redrive", editor, json={"eventTrackerId": "fail-a"}).json()
    assert again["summary"]["redriven"] == 0 and len(data.stream.log(0)) == before + 1
    record = api.call("GET", "/dlq", viewer, params={"redriven": "yes"}).json()["items"]
    editor_id = api.tokens.store.all()[2].id
    assert [e["redriven"]["by"] for e in record] == [f"api:editor@{ROOM_1} ({editor_id})"]
    # replay: a dry run copies nothing; a run appends the room's events once
    body = {"orgId": ROOM_1, "since": "2026-03-01T00:00:00Z", "state": "fresh"}
    assert api.call("POST", "/replays", viewer, json=body).status_code == 403
    plan = api.call("POST", "/replays?dryRun=true", editor, json=body)
    assert plan.status_code == 200, plan.text
    planned = plan.json()
    assert planned["dryRun"] and planned["events"] > 0 and planned["state"] == "fresh"
    assert len(data.stream.log(0)) == before + 1
    run = api.call("POST", "/replays", editor, json={**body, "id": "r1"}).json()
    assert run["events"] == planned["events"]
    assert len(data.stream.log(0)) == before + 1 + run["events"] + 1  # the copies, the marker
    assert api.call("POST", "/replays", editor, json={"orgId": ROOM_1}).status_code == 422
    assert api.call("POST", "/replays", editor, json={**body, "state": "warm"}).status_code == 422


def test_the_dlq_is_read_page_by_page_with_its_cursor(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    root = tokens["root"]
    whole = api.call("GET", "/dlq", root, params={"redriven": "all"}).json()
    assert whole["nextCursor"] is None
    everything = [(e["source"], e["eventTrackerId"]) for e in whole["items"]]
    assert len(everything) >= 3, everything  # two DLQ entries and a refusal at bind
    seen: list[tuple[str, str]] = []
    params: dict[str, Any] = {"redriven": "all", "limit": 1}
    for _ in range(len(everything)):
        page = api.call("GET", "/dlq", root, params=params).json()
        assert len(page["items"]) <= 2  # one per source
        seen += [(e["source"], e["eventTrackerId"]) for e in page["items"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert sorted(seen) == sorted(everything) and len(seen) == len(set(seen))
    bad = api.call("GET", "/dlq", root, params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 422 and bad.json()["issues"][0]["path"] == "query:cursor"


def test_ingest_tokens_read_nothing(api: RunningApi, tokens: dict[str, str]) -> None:
    ingest = tokens["ingest"]
    for method, path, body in [("GET", "/events", None), ("GET", "/logs/dlq", None),
                               ("GET", "/events/fail-a/story", None), ("GET", "/dlq", None),
                               ("POST", "/dlq/redrive", {"all": True}),
                               ("POST", "/replays", {"orgId": ROOM_1, "fromSeq": 1})]:  # fmt: skip
        assert api.call(method, path, ingest, json=body).status_code == 403, path
        assert api.call(method, path, None, json=body).status_code == 401, path
