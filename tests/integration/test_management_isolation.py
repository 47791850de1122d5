"""Tenant isolation through every endpoint of the management API, table-driven, over real
HTTP: tokens of two sibling cold rooms (``alpha-cold-room-1`` = A, ``alpha-cold-room-2`` = B)
and of their parent floor (``alpha-a-floor-1``).

For every kind, B owns an entity (and a sub-organization). Walking every route and query
parameter with A's tokens (viewer, editor, admin, ingest): nothing of B is read, changed or
deleted, no answer carries any of B's data, and a reference to B's entities is "unknown" exactly
as an id that does not exist. The parent's viewer sees both rooms; an editor touches no token;
an ingest token gets 403 everywhere, its own room's entities included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.management import LOCAL, SLUGS
from tests.integration.apikit import RunningApi, running_api, sample_documents

pytestmark = pytest.mark.services

A, B, PARENT = "alpha-cold-room-1", "alpha-cold-room-2", "alpha-a-floor-1"


def room_entities(room: str) -> list[dict[str, Any]]:
    """One entity of every kind for ``room``, with a marker only it carries."""
    docs = {d["id"]: d for d in sample_documents()}
    template = {**copy.deepcopy(docs["freezer-json"]), "id": f"tpl-{room}", "orgId": room,
                "name": f"secret-tpl-{room}"}  # fmt: skip
    rule = {**copy.deepcopy(docs["high-temp-alert"]), "id": f"rule-{room}", "orgId": room,
            "name": f"secret-rule-{room}", "shared": False}  # fmt: skip
    for action in rule["actions"]:
        if action.get("type") == "exec":
            action["triggerId"] = f"trg-{room}"
    return [
        {"kind": "Organization", "id": f"zone-{room}", "name": f"secret-zone-{room}",
         "type": "zone", "parentId": room},
        template,
        {"kind": "RouteGroup", "id": f"rg-{room}", "orgId": room, "name": f"secret-rg-{room}",
         "version": 1, "routers": [{"kind": "save_event"}]},
        {"kind": "Trigger", "id": f"trg-{room}", "orgId": room, "name": f"secret-trg-{room}",
         "triggerType": "http", "config": {"http": {"endpoint": "https://example.com/h",
                                                    "method": "POST"}}},
        rule,
        {"kind": "BusinessRule", "id": f"br-{room}", "ruleId": f"rule-{room}", "orgId": room,
         "name": f"secret-br-{room}", "parameters": {"threshold": 1}},
        {"kind": "DataSource", "id": f"ds-{room}", "orgId": room, "name": f"secret-ds-{room}",
         "protocol": "http", "auth": {"type": "none"}, "assetBind": {"uuidFields": ["id"]}},
        {"kind": "Asset", "id": f"asset-{room}", "orgId": room, "assetUUID": f"SECRET-{room}",
         "name": f"secret-asset-{room}", "templateId": f"tpl-{room}",
         "routeGroupIds": [f"rg-{room}"]},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    for running in running_api(tmp_path_factory.mktemp("isolation")):
        running.entities.apply(LOCAL, room_entities(A) + room_entities(B))
        yield running


@pytest.fixture(scope="module")
def tokens(api: RunningApi) -> dict[str, str]:
    out = {role: api.token(A, role, name=f"A-{role}") for role in
           ("viewer", "editor", "admin", "ingest")}  # fmt: skip
    out["parent"] = api.token(PARENT, "viewer")
    out["B-admin"] = api.token(B, "admin", name="B-admin")
    return out


def b_state(api: RunningApi) -> list[dict[str, Any]]:
    return [d for d in api.store.documents() if B in str(d)]


B_MARKERS = ("secret-", "SECRET-")  # B's names and UUID carry them (and A's: checked by room)


def leaks(text: str) -> bool:
    return any(f"{marker}{suffix}" in text for marker in B_MARKERS for suffix in (
        f"tpl-{B}", f"rule-{B}", f"zone-{B}", f"rg-{B}", f"trg-{B}", f"br-{B}", f"ds-{B}",
        f"asset-{B}", B)) or "Freezer 03" in text or "Cold room 2 probe" in text  # fmt: skip


def b_entity(kind: str) -> str:
    return {"Organization": f"zone-{B}", "AssetTemplate": f"tpl-{B}", "RouteGroup": f"rg-{B}",
            "Trigger": f"trg-{B}", "Rule": f"rule-{B}", "BusinessRule": f"br-{B}",
            "DataSource": f"ds-{B}", "Asset": f"asset-{B}"}[kind]  # fmt: skip


def b_doc(api: RunningApi, kind: str) -> dict[str, Any]:
    doc, _ = api.entities.get(LOCAL, kind, b_entity(kind))
    return doc


def cases(api: RunningApi) -> list[tuple[str, str, str, Any, dict[str, int]]]:
    """(what, method, path, body, expected status per role: viewer, editor, admin)."""
    out: list[tuple[str, str, str, Any, dict[str, int]]] = []
    read = {"viewer": 404, "editor": 404, "admin": 404}
    write = {"viewer": 403, "editor": 404, "admin": 404}
    for kind, slug in SLUGS.items():
        entity = b_entity(kind)
        doc = {k: v for k, v in b_doc(api, kind).items() if k not in ("pathKey", "depth")}
        mine = {**doc, "id": f"new-{kind.lower()}", "name": "new"}
        mine.pop("kind", None)
        if kind == "Organization":
            mine["parentId"] = B
        elif "orgId" in mine:
            mine["orgId"] = B
        out += [
            (f"get {kind}", "GET", f"/{slug}/{entity}", None, read),
            (f"history {kind}", "GET", f"/{slug}/{entity}/history", None, read),
            (f"update {kind}", "PUT", f"/{slug}/{entity}", doc, write),
            (f"update {kind} if-match", "PUT", f"/{slug}/{entity}", doc, write),
            (f"delete {kind}", "DELETE", f"/{slug}/{entity}", None, write),
            (f"delete {kind} dry-run", "DELETE", f"/{slug}/{entity}?dryRun=true", None, write),
            (f"rollback {kind}", "POST", f"/{slug}/{entity}/rollback", {"revision": 1}, write),
            (f"create {kind} in B", "POST", f"/{slug}", mine,
             {"viewer": 403, "editor": 422, "admin": 422}),
            (f"create {kind} taking B's id", "POST", f"/{slug}", {**mine, "id": entity},
             {"viewer": 403, "editor": 409, "admin": 409}),
            (f"apply {kind} over B's", "POST", "/apply", {"documents": [{**doc, "name": "x"}]},
             {"viewer": 403, "editor": 409, "admin": 409}),
            (f"dry-run {kind} over B's", "POST", "/dry-run", {"documents": [doc]},
             {"viewer": 403, "editor": 409, "admin": 409}),
            (f"dry-run delete {kind}", "POST", "/dry-run",
             {"deletes": [{"kind": kind, "id": entity}]}, write),
        ]  # fmt: skip
    b_token = api.tokens.store.all()[-1].id  # B's admin token, made last
    tokens_only = {"viewer": 403, "editor": 403, "admin": 404}
    out += [
        ("get B's token", "GET", f"/tokens/{b_token}", None, tokens_only),
        ("revoke B's token", "DELETE", f"/tokens/{b_token}", None, tokens_only),
        ("token for B", "POST", "/tokens", {"orgId": B, "role": "admin"}, tokens_only),
        ("token for B's zone", "POST", "/tokens", {"orgId": f"zone-{B}", "role": "viewer"},
         tokens_only),
    ]  # fmt: skip
    out += sandbox_cases(api)
    return out


def sandbox_cases(api: RunningApi) -> list[tuple[str, str, str, Any, dict[str, int]]]:
    """The test runs (templates, business rules; viewers may run them): anything of B in the
    body or the events is unknown, as in any other route."""
    unknown = {"viewer": 404, "editor": 404, "admin": 404}
    template = b_doc(api, "AssetTemplate")
    br_b, rule_b = b_doc(api, "BusinessRule"), b_doc(api, "Rule")
    br_a = {**br_b, "id": f"br-{A}", "orgId": A, "ruleId": f"rule-{A}"}
    event = {"eventType": "temperature", "data": {"temperature": -1}}
    return [
        ("test B's template", "POST", "/asset-templates/test",
         {"template": template, "payloads": [{"deviceId": "x"}]}, unknown),
        ("test B's business rule", "POST", "/business-rules/test",
         {"businessRule": br_b, "events": [event]}, unknown),
        ("test with B's rule", "POST", "/business-rules/test",
         {"businessRule": {**br_a, "ruleId": f"rule-{B}"}, "events": [event]}, unknown),
        ("test with B's rule as a body", "POST", "/business-rules/test",
         {"businessRule": {**br_a, "ruleId": f"rule-{B}"}, "rule": rule_b, "events": [event]},
         unknown),
        ("test on B's asset", "POST", "/business-rules/test",
         {"businessRule": br_a, "events": [{"event": event, "assetId": f"asset-{B}"}]}, unknown),
        ("test in B's organization", "POST", "/business-rules/test",
         {"businessRule": br_a, "events": [{**event, "orgId": B}]}, unknown),
    ]  # fmt: skip


def test_a_tenant_reads_changes_and_deletes_nothing_of_its_sibling(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    before = b_state(api)
    table = cases(api)
    assert len(table) == 8 * 12 + 4 + 6
    for what, method, path, body, expected in table:
        for role, status in expected.items():
            headers = {"If-Match": '"1"'} if "if-match" in what else {}
            answer = api.call(method, path, tokens[role], json=body, headers=headers)
            assert answer.status_code == status, (what, role, answer.text)
            assert not leaks(answer.text), (what, role, answer.text)
    assert b_state(api) == before  # nothing of B changed
    ids_of_b = {b_entity(kind) for kind in SLUGS}
    assert not [d for d in api.store.documents() if str(d.get("id", "")).startswith("new-")]
    assert ids_of_b <= {d["id"] for d in api.store.documents()}


@pytest.mark.parametrize("slug", list(SLUGS.values()))
def test_no_list_or_query_parameter_shows_the_sibling(
    api: RunningApi, tokens: dict[str, str], slug: str
) -> None:
    queries = ["", f"?orgId={B}", f"?orgId={B}&includeChildren=true", f"?orgId=zone-{B}",
               f"?orgId={PARENT}&includeChildren=true", "?name=secret", f"?name={B}",
               "?enabled=true", "?enabled=false", "?limit=1000", "?orgId=acme-foods&includeChildren=true"]  # fmt: skip
    for query in queries:
        for role in ("viewer", "editor", "admin"):
            answer = api.call("GET", f"/{slug}{query}", tokens[role])
            assert answer.status_code == 200, (slug, query, answer.text)
            assert not leaks(answer.text), (slug, query, role, answer.text)
            orgs = {d.get("orgId", d.get("id")) for d in answer.json()["items"]}
            assert not orgs & {B, f"zone-{B}"}, (slug, query, orgs)
    mine = api.call("GET", f"/{slug}", tokens["viewer"]).json()["items"]
    if slug not in ("organizations",):
        assert any(A in str(d) for d in mine), slug  # A sees its own


def test_references_to_the_sibling_are_unknown_like_missing_ids(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    editor = tokens["editor"]

    def reasons(slug: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        answer = api.call("POST", f"/{slug}", editor, json=body)
        assert answer.status_code == 422, answer.text
        assert not leaks(answer.text), answer.text
        return [(i["path"], i["reason"]) for i in answer.json()["issues"]]

    for field, theirs, missing, slug, body in [
        ("templateId", f"tpl-{B}", "tpl-none", "assets",
         {"id": "a1", "orgId": A, "assetUUID": "U-a1", "name": "a", "routeGroupIds": [f"rg-{A}"]}),
        ("routeGroupIds", [f"rg-{B}"], ["rg-none"], "assets",
         {"id": "a2", "orgId": A, "assetUUID": "U-a2", "name": "a", "templateId": f"tpl-{A}"}),
        ("ruleId", f"rule-{B}", "rule-none", "business-rules",
         {"id": "br1", "orgId": A, "parameters": {"threshold": 1}}),
    ]:  # fmt: skip
        got_theirs = reasons(slug, {**body, field: theirs})
        got_missing = reasons(slug, {**body, field: missing})
        assert len(got_theirs) == len(got_missing) == 1
        assert got_theirs[0][1].replace(str(theirs[0] if isinstance(theirs, list) else theirs),
                                        "X") == got_missing[0][1].replace(
            str(missing[0] if isinstance(missing, list) else missing), "X")  # fmt: skip
    fixed = reasons("data-sources", {"id": "ds1", "orgId": A, "name": "d", "protocol": "http",
                                     "auth": {"type": "none"},
                                     "assetBind": {"fixedAssetId": f"asset-{B}"}})  # fmt: skip
    assert fixed == [("assetBind.fixedAssetId", f"unknown asset 'asset-{B}'")]
    group = reasons("route-groups", {"id": "rg1", "orgId": A, "name": "g", "version": 1,
                                     "routers": [{"kind": "trigger",
                                                  "trigger": {"triggerId": f"trg-{B}"}}]})  # fmt: skip
    assert group == [("routers[0].trigger.triggerId", f"unknown trigger 'trg-{B}'")]


def test_the_parent_sees_both_rooms(api: RunningApi, tokens: dict[str, str]) -> None:
    for kind, slug in SLUGS.items():
        for room in (A, B):
            entity = f"{b_entity(kind).rsplit(B, 1)[0]}{room}"
            answer = api.call("GET", f"/{slug}/{entity}", tokens["parent"])
            assert answer.status_code == 200, (kind, room, answer.text)
        listed = {
            d["id"]
            for d in api.call("GET", f"/{slug}?limit=1000", tokens["parent"]).json()["items"]
        }
        assert b_entity(kind) in listed and b_entity(kind).replace(B, A) in listed
    assets = api.call("GET", f"/assets?orgId={PARENT}&includeChildren=true", tokens["parent"])
    assert {d["id"] for d in assets.json()["items"]} >= {"freezer-01", "freezer-03"}
    assert api.call("GET", "/assets/lora-door-01", tokens["parent"]).status_code == 404


def test_an_editor_touches_no_token_and_ingest_gets_403_everywhere(
    api: RunningApi, tokens: dict[str, str]
) -> None:
    mine = api.tokens.store.all()[0].id  # A's viewer token
    for method, path, body in [("GET", "/tokens", None), ("GET", f"/tokens/{mine}", None),
                               ("DELETE", f"/tokens/{mine}", None),
                               ("POST", "/tokens", {"orgId": A, "role": "viewer"})]:  # fmt: skip
        assert api.call(method, path, tokens["editor"], json=body).status_code == 403
        assert api.call(method, path, tokens["viewer"], json=body).status_code == 403
    routes: list[tuple[str, str, Any]] = [("GET", "/whoami", None), ("POST", "/apply", {"documents": []}),
                                          ("POST", "/dry-run", {})]  # fmt: skip
    for kind, slug in SLUGS.items():
        own = b_entity(kind).replace(B, A)
        routes += [("GET", f"/{slug}", None), ("POST", f"/{slug}", {"id": "x"}),
                   ("GET", f"/{slug}/{own}", None), ("PUT", f"/{slug}/{own}", {}),
                   ("DELETE", f"/{slug}/{own}", None), ("GET", f"/{slug}/{own}/history", None),
                   ("POST", f"/{slug}/{own}/rollback", {"revision": 1})]  # fmt: skip
    routes += [
        ("POST", "/asset-templates/test", {"template": {}, "payloads": []}),
        ("POST", "/business-rules/test", {"businessRule": {}, "events": []}),
    ]
    routes += [("GET", "/tokens", None), ("POST", "/tokens", {"orgId": A, "role": "ingest"}),
               ("GET", f"/tokens/{mine}", None), ("DELETE", f"/tokens/{mine}", None)]  # fmt: skip
    for method, path, body in routes:
        answer = api.call(method, path, tokens["ingest"], json=body)
        assert answer.status_code == 403, (method, path, answer.text)
    assert api.call("GET", f"/assets/asset-{A}", tokens["viewer"]).status_code == 200


def test_a_viewer_runs_its_own_tests(api: RunningApi, tokens: dict[str, str]) -> None:
    """Test runs change nothing, so a viewer may run them on its own entities; the answers are
    the engines' (a stage error with its line, a rule's trace)."""
    template = {**b_doc(api, "AssetTemplate"), "id": f"tpl-{A}", "orgId": A}
    ran = api.call("POST", "/asset-templates/test", tokens["viewer"], json={
        "template": template,
        "payloads": [{"deviceId": "d1", "ts": "2026-03-01T08:00:00Z", "readings": {"t": -20},
                      "door": "closed"},
                     {"deviceId": "d1", "ts": "2026-03-01T08:00:00Z", "readings": {"t": 99},
                      "door": "closed"}]})  # fmt: skip
    assert ran.status_code == 200, ran.text
    good, bad = ran.json()["items"]
    assert good["standardEvent"]["data"]["temperature"] == -20
    assert bad["error"]["stage"] == "validate" and bad["error"]["line"] == 10, bad
    br = {**b_doc(api, "BusinessRule"), "id": f"br-{A}", "orgId": A, "ruleId": f"rule-{A}"}
    event = {"eventType": "temperature", "data": {"temperature": 5}, "metadata": {"assetId":
             f"asset-{A}"}, "created": "2026-03-01T08:00:00Z"}  # fmt: skip
    tested = api.call("POST", "/business-rules/test", tokens["viewer"],
                      json={"businessRule": br, "events": [event]})  # fmt: skip
    assert tested.status_code == 200, tested.text
    (report,) = tested.json()["items"]
    assert report["inScope"] and report["matched"] and report["trace"], report
    before = api.store.revision()
    assert api.call("POST", "/business-rules/test", tokens["viewer"], json={
        "businessRule": br, "events": [{"event": 1}]}).status_code == 422  # fmt: skip
    assert api.store.revision() == before  # a test run writes nothing


def test_a_template_test_runs_in_the_script_host_as_the_lanes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """As the API actor wires it: the scripts run in the host's child process under the given
    limits, so a script over its time limit fails its own payload, with its stage."""
    from eventray.pipeline.scripts.host import ScriptHost
    from eventray.pipeline.scripts.limits import ScriptLimits

    host = ScriptHost(ScriptLimits(time_s=0.2))
    try:
        for running in running_api(tmp_path_factory.mktemp("hosted"),
                                   state=lambda _: {"script_host": host}):  # fmt: skip
            template = {"kind": "AssetTemplate", "id": "t-loop", "orgId": A, "name": "loop",
                        "scriptConversion": "if (payload.spin) { for (;;) {} }\n"
                        "result = {eventType: 'x', eventId: 'e1', data: payload, created: '2026-03-01T08:00:00Z'};"}  # fmt: skip
            ran = running.call("POST", "/asset-templates/test", running.token(A, "viewer"),
                               json={"template": template,
                                     "payloads": [{"spin": False}, {"spin": True}]})  # fmt: skip
            assert ran.status_code == 200, ran.text
            good, spun = ran.json()["items"]
            assert good["standardEvent"]["eventType"] == "x", good
            assert spun["error"] == {"stage": "transform",
                                     "message": "time limit of 200 ms exceeded"}  # fmt: skip
            assert host.pid is not None  # it ran in the child
    finally:
        host.close()
