"""Tenant isolation through every route over stored data, the DLQ and replay, table-driven, over
real HTTP against real data (``datakit``): tokens of two sibling cold rooms
(``alpha-cold-room-1`` = A, ``alpha-cold-room-2`` = B) and of their parent floor.

Walking every route and query parameter with A's tokens (viewer, editor, admin): nothing of B
is read, redriven or replayed; an organization filter naming B answers 404 exactly as one that
does not exist; any other filter naming B's things (its events' tracker ids, its assets) finds
nothing; no answer carries any of B's data, whatever the format, and a cursor taken from a wider
scope does not widen A's. The parent's tokens see and act on both rooms; ingest tokens get 403
everywhere, their own room included; no token, 401. The sibling suite over entities is
``test_management_isolation.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.storage.logs import LOG_KINDS
from eventray.pipeline.storage.schema import columns_of
from tests.integration.apikit import RunningApi, running_api, sample_documents
from tests.integration.datakit import StoredData, data_routers, stored_data

pytestmark = pytest.mark.services

A, B, PARENT = "alpha-cold-room-1", "alpha-cold-room-2", "alpha-a-floor-1"
B_ASSETS = ("freezer-03", "lora-th-01")
B_MARKERS = (B, *B_ASSETS, "FRZ-0003", "24E124136B316241", "Freezer 03", "fail-b")


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
    out = {role: api.token(A, role, name=f"A-{role}") for role in
           ("viewer", "editor", "admin", "ingest")}  # fmt: skip
    out["parent"] = api.token(PARENT, "viewer")
    out["parent-editor"] = api.token(PARENT, "editor")
    return out


def trackers(data: StoredData, org: str) -> list[str]:
    return sorted({r["event_tracker_id"] for r in data.truth["events"] if r["org_id"] == org})


def b_markers(data: StoredData) -> tuple[str, ...]:
    return (*B_MARKERS, *trackers(data, B))


def leaks(data: StoredData, text: str) -> list[str]:
    return [marker for marker in b_markers(data) if marker in text]


def wider_cursor(api: RunningApi, tokens: dict[str, str], path: str) -> str:
    """A cursor the parent got on a page that has B's rows after it."""
    answer = api.call("GET", path, tokens["parent"], params={"limit": 1})
    cursor: str = answer.json()["nextCursor"]
    assert cursor, path
    return cursor


Case = tuple[str, str, str, dict[str, Any] | list[tuple[str, str]] | None, Any, dict[str, int]]


def cases(api: RunningApi, data: StoredData, tokens: dict[str, str]) -> list[Case]:
    """(what, method, path, query, body, expected status per role: viewer, editor, admin)."""
    read = {"viewer": 200, "editor": 200, "admin": 200}
    hidden = {"viewer": 404, "editor": 404, "admin": 404}
    act = {"viewer": 403, "editor": 200, "admin": 200}
    act_hidden = {"viewer": 403, "editor": 404, "admin": 404}
    b_event, b_asset = trackers(data, B)[0], B_ASSETS[0]
    out: list[Case] = []
    for kind in ("events", *LOG_KINDS):
        path = "/events" if kind == "events" else f"/logs/{kind}"
        table = "events" if kind == "events" else LOG_KINDS[kind]
        columns = set(columns_of(table))
        out += [
            (f"{kind}: everything", "GET", path, {"limit": 10_000}, None, read),
            (f"{kind}: jsonl", "GET", path, {"format": "jsonl", "limit": 10_000}, None, read),
            (f"{kind}: csv, all", "GET", path, {"format": "csv", "all": "true", "limit": 7},
             None, read),
            (f"{kind}: orgId B", "GET", path, {"orgId": B}, None, hidden),
            (f"{kind}: orgId B and children", "GET", path,
             {"orgId": B, "includeChildren": "true"}, None, hidden),
            (f"{kind}: B's event", "GET", path, {"eventTrackerId": b_event}, None, read),
            (f"{kind}: B's failed event", "GET", path, {"eventTrackerId": "fail-b"}, None, read),
            (f"{kind}: since/until", "GET", path,
             {"since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}, None, read),
            (f"{kind}: a parent's cursor", "GET", path,
             {"cursor": wider_cursor(api, tokens, path), "limit": 10_000}, None, read),
        ]  # fmt: skip
        if "asset_id" in columns:
            out.append((f"{kind}: B's asset", "GET", path, {"assetId": b_asset}, None, read))
        if kind in ("events", "captures"):
            out.append((f"{kind}: where", "GET", path,
                        [("where", "temperature > -1000"), ("limit", "10000")], None, read))  # fmt: skip
        if kind in ("dlq", "raw"):
            out.append((f"{kind}: stage", "GET", path, {"stage": "validate"}, None, read))
        if kind == "rules":
            out.append((f"{kind}: matched", "GET", path, {"matched": "true"}, None, read))
    out += [
        ("story of B's event", "GET", f"/events/{b_event}/story", None, None, hidden),
        ("story of B's failed event", "GET", "/events/fail-b/story", None, None, hidden),
        ("overview", "GET", "/overview", None, None, read),
        ("overview of B", "GET", "/overview", {"orgId": B}, None, hidden),
        ("overview of the floor", "GET", "/overview", {"orgId": PARENT}, None, hidden),
        ("dlq", "GET", "/dlq", None, None, read),
        ("dlq of B", "GET", "/dlq", {"orgId": B}, None, hidden),
        ("dlq: B's event", "GET", "/dlq", {"eventTrackerId": "fail-b"}, None, read),
        ("dlq: B's asset", "GET", "/dlq", {"assetId": "freezer-03"}, None, read),
        ("dlq: redriven", "GET", "/dlq", {"redriven": "yes", "source": "all"}, None, read),
        ("redrive B", "POST", "/dlq/redrive", None, {"orgId": B}, act_hidden),
        ("redrive B dry-run", "POST", "/dlq/redrive", {"dryRun": "true"}, {"orgId": B},
         act_hidden),
        ("redrive B's event", "POST", "/dlq/redrive", None, {"eventTrackerId": "fail-b"}, act),
        ("redrive B's asset", "POST", "/dlq/redrive", None, {"assetId": "freezer-03"}, act),
        ("redrive B's stage", "POST", "/dlq/redrive", {"dryRun": "true"},
         {"stage": "validate"}, act),
        ("redrive all dry-run", "POST", "/dlq/redrive", {"dryRun": "true"}, {"all": True}, act),
        ("replay B", "POST", "/replays", None, {"orgId": B, "since": "2026-01-01T00:00:00Z"},
         act_hidden),
        ("replay B fresh with triggers", "POST", "/replays", None,
         {"orgId": B, "fromSeq": 1, "state": "fresh", "triggers": True}, act_hidden),
        ("replay B dry-run", "POST", "/replays", {"dryRun": "true"},
         {"orgId": B, "includeChildren": True, "fromSeq": 1}, act_hidden),
        ("replay the floor", "POST", "/replays", {"dryRun": "true"},
         {"orgId": PARENT, "includeChildren": True, "fromSeq": 1}, act_hidden),
        ("replay A dry-run", "POST", "/replays", {"dryRun": "true"},
         {"orgId": A, "fromSeq": 1, "state": "fresh"}, act),
    ]  # fmt: skip
    return out


def same_for_unknown(
    api: RunningApi, token: str, method: str, path: str, query: Any, body: Any
) -> Any:
    """The answer to the same request naming an organization that does not exist instead of
    B, with B's id written back where the unknown one's was."""

    def swap(value: Any) -> Any:
        return {k: "no-such-org" if v == B else v for k, v in value.items()} if value else value

    answer = api.call(method, path, token, params=swap(query), json=swap(body))
    assert answer.status_code == 404, answer.text
    return {k: v.replace("no-such-org", B) if isinstance(v, str) else v
            for k, v in answer.json().items()}  # fmt: skip


def only_a(data: StoredData, answer: Any) -> None:
    """Every row, entry or item an answer holds is A's."""
    text = answer.text
    assert not leaks(data, text), (answer.request.url, leaks(data, text))
    content = answer.headers.get("content-type", "")
    if content.startswith("application/json"):
        body = answer.json()
        for row in body.get("rows", []) + body.get("items", []) + body.get("orgs", []):
            assert row.get("org_id", row.get("orgId")) == A, row
        for partition in body.get("partitions", []):
            assert partition["orgs"] == [A], partition
            assert not set(partition["sample"]) & set(trackers(data, B)), partition


def test_a_tenant_reads_redrives_and_replays_nothing_of_its_sibling(
    api: RunningApi, data: StoredData, tokens: dict[str, str]
) -> None:
    table = cases(api, data, tokens)
    assert len(table) > 90
    stream_before = len(data.stream.log(0))
    checked = 0
    for what, method, path, query, body, expected in table:
        for role, status in expected.items():
            answer = api.call(method, path, tokens[role], params=query, json=body)
            assert answer.status_code == status, (what, role, answer.status_code, answer.text)
            if status == 404 and B in str((query, body)):  # word for word an unknown one's
                assert answer.json() == same_for_unknown(api, tokens[role], method, path, query,
                                                         body), what  # fmt: skip
            if status == 200:
                only_a(data, answer)
            else:  # it may only echo what the request named
                named = str((path, query, body))
                assert not [m for m in leaks(data, answer.text) if m not in named], (what, role)
            checked += 1
    # A's own redrives of B's things appended nothing, and nothing of B was recorded
    assert len(data.stream.log(0)) == stream_before
    assert not [
        r for r in data.select(f"SELECT org_id FROM {data.database}.dlq_redrive FINAL")
        if r["org_id"] != A
    ]  # fmt: skip
    assert checked > 250


def test_the_parent_sees_and_acts_on_both_rooms(
    api: RunningApi, data: StoredData, tokens: dict[str, str]
) -> None:
    parent, editor = tokens["parent"], tokens["parent-editor"]
    found = api.call("GET", "/events", parent, params={"orgId": B, "limit": 10_000}).json()
    assert {r["event_tracker_id"] for r in found["rows"]} == set(trackers(data, B))
    every = api.call("GET", "/events", parent, params={"limit": 10_000}).json()["rows"]
    assert {r["org_id"] for r in every} == {A, B}
    assert api.call("GET", f"/events/{trackers(data, B)[0]}/story", parent).status_code == 200
    entries = api.call("GET", "/dlq", parent).json()["items"]
    assert {e["eventTrackerId"] for e in entries} == {"fail-a", "fail-b"}
    assert api.call("POST", "/replays", parent, json={"orgId": B, "fromSeq": 1}).status_code == 403
    plan = api.call("POST", "/replays?dryRun=true", editor, json={"orgId": B, "fromSeq": 1})
    assert plan.status_code == 200 and plan.json()["events"] >= len(trackers(data, B))
    assert set(plan.json()["partitions"][0]["sample"]) <= {*trackers(data, B), "fail-b"}
    dry = api.call("POST", "/dlq/redrive?dryRun=true", editor, json={"orgId": B}).json()
    assert [i["eventTrackerId"] for i in dry["items"]] == ["fail-b"]
    # the Overview: the floor's card and a card per room; the rows are months old, so the
    # last minutes count nothing, and every room waits behind the one partition's backlog
    seen = api.call("GET", "/overview", parent, params={"minutes": 5}).json()
    assert [o["orgId"] for o in seen["orgs"]] == [PARENT, A, B]
    backlog = asyncio.run(data.stream.pending(0))
    assert backlog > 0
    for card in seen["orgs"]:
        assert (card["lag"], card["partitions"]) == (backlog, [0])
        assert card["events"] == card["dlq"] == card["triggersFailed"] == [0] * 5
        # entries waiting for a redrive, whenever made: as the DLQ listing counts them
        listed = api.call("GET", "/dlq", parent, params={"orgId": card["orgId"], "redriven": "no",
                                                         "limit": 1000}).json()["items"]  # fmt: skip
        assert card["dlqPending"] == len(listed), card
    assert seen["orgs"][1]["dlqPending"] >= 1 and seen["orgs"][2]["dlqPending"] >= 1
    assert seen["pendingCapped"] is False
    assert api.call("GET", "/overview", parent, params={"minutes": 61}).status_code == 422


def test_ingest_tokens_and_no_token(
    api: RunningApi, data: StoredData, tokens: dict[str, str]
) -> None:
    for what, method, path, query, body, _ in cases(api, data, tokens):
        answer = api.call(method, path, tokens["ingest"], params=query, json=body)
        assert answer.status_code == 403, (what, answer.text)
        assert api.call(method, path, None, params=query, json=body).status_code == 401, what
