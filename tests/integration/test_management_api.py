"""The management API over real HTTP (uvicorn on a free port) against the file config store:
every status of the contract, revision history and rollback, tokens, and the OpenAPI
document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, Request

from eventray.actors.api_app import PREFIX
from eventray.actors.api_auth import Editor, Viewer
from tests.integration.apikit import RunningApi, asset, running_api

pytestmark = pytest.mark.services


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    yield from running_api(tmp_path, max_body_bytes=64 * 1024)


def test_entities_round_trip_with_etag_history_and_rollback(api: RunningApi) -> None:
    editor = api.token("alpha-cold-room-1", "editor", name="ops")
    created = api.call("POST", "/assets", editor, json=asset("frz-10", "alpha-cold-room-1"))
    assert created.status_code == 201, created.text
    assert created.json()["changes"] == [
        {"kind": "Asset", "id": "frz-10", "op": "create", "revision": 1}
    ]
    assert api.notices == [created.json()["storeRevision"]]  # the running actors were told
    got = api.call("GET", "/assets/frz-10", editor)
    assert (got.status_code, got.headers["etag"], got.json()["orgId"]) == (
        200, '"1"', "alpha-cold-room-1"
    )  # fmt: skip
    changed = {**got.json(), "name": "Freezer ten"}
    stale = api.call("PUT", "/assets/frz-10", editor, json=changed, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["revision"] == 1
    ok = api.call("PUT", "/assets/frz-10", editor, json=changed, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    history = api.call("GET", "/assets/frz-10/history", editor).json()["items"]
    assert [(h["revision"], h["op"], h["author"]["name"]) for h in history] == [
        (1, "create", "ops"), (2, "update", "ops")
    ]  # fmt: skip
    assert history[1]["diff"] == [
        {"op": "replace", "path": "name", "from": "Asset frz-10", "to": "Freezer ten"}
    ]
    back = api.call("POST", "/assets/frz-10/rollback", editor, json={"revision": 1})
    assert back.status_code == 200, back.text
    assert api.call("GET", "/assets/frz-10", editor).json()["name"] == "Asset frz-10"
    assert api.call("DELETE", "/assets/frz-10", editor).status_code == 200
    assert api.call("GET", "/assets/frz-10", editor).status_code == 404
    ops = [h["op"] for h in api.call("GET", "/assets/frz-10/history", editor).json()["items"]]
    assert ops == ["create", "update", "update", "delete"]
    page = api.call("GET", "/assets?limit=1", editor).json()
    assert [d["id"] for d in page["items"]] == ["freezer-01"] and page["nextCursor"]
    rest = api.call("GET", f"/assets?limit=10&cursor={page['nextCursor']}", editor).json()
    assert [d["id"] for d in rest["items"]] == ["freezer-02"] and rest["nextCursor"] is None


def test_every_refusal_has_its_status(api: RunningApi) -> None:
    viewer = api.token("alpha-cold-room-1", "viewer")
    editor = api.token("acme-foods", "editor")
    assert api.call("GET", "/assets").status_code == 401
    assert api.call("GET", "/assets", "ert_not-a-token").status_code == 401
    assert api.call("GET", "/assets", api.token("acme-foods", "ingest")).status_code == 403
    assert (
        api.call("POST", "/assets", viewer, json=asset("x", "alpha-cold-room-1")).status_code == 403
    )
    outside = api.call("GET", "/assets/freezer-03", viewer)
    unknown = api.call("GET", "/assets/freezer-3", viewer)
    assert outside.status_code == unknown.status_code == 404
    # Both name the assets the token may see, and only those (freezer-03 is another room's):
    # an id outside the scope reads exactly like one that does not exist.
    assert outside.json()["error"] == (
        "no Asset 'freezer-03'; did you mean freezer-02, freezer-01? valid: freezer-01, freezer-02"
    )
    assert unknown.json()["error"].endswith("valid: freezer-01, freezer-02")
    assert api.call("GET", "/tokens", editor).status_code == 403
    used = api.call("DELETE", "/route-groups/rg-critical-webhook", editor)
    assert used.status_code == 409
    assert used.json()["referrers"] == [
        {"kind": "Asset", "id": "freezer-03", "path": "routeGroupIds[1]"}
    ]
    taken = api.call("POST", "/assets", editor, json=asset("freezer-01", "acme-foods"))
    assert taken.status_code == 409
    bad = api.call("POST", "/assets", editor,
                   json=asset("x", "acme-foods", routeGroupIds=[], templateId=5))  # fmt: skip
    assert bad.status_code == 422
    assert {(i["path"], i["source"]) for i in bad.json()["issues"]} == {
        ("routeGroupIds", "request"), ("templateId", "request")
    }  # fmt: skip
    unknown = api.call("POST", "/assets", editor, json=asset("x", "acme-foods", templateId="t9"))
    assert [(i["path"], i["reason"]) for i in unknown.json()["issues"]] == [
        ("templateId", "unknown asset template 't9'")
    ]
    assert api.call("POST", "/assets", editor, content=b"{not json").status_code == 400
    assert api.call("POST", "/assets", editor, json=[1, 2]).status_code == 422
    assert api.call("GET", "/assets?limit=0", editor).status_code == 422
    assert api.call("GET", "/assets?cursor=%25%25", editor).status_code == 422
    assert api.call("PUT", "/assets/freezer-01", editor, json=asset("other", "acme-foods")
                    ).status_code == 422  # fmt: skip
    big = api.call("POST", "/assets", editor, content=b"[" + b"1," * 40_000 + b"1]")
    assert big.status_code == 413
    assert api.call("PUT", "/assets/freezer-01", editor, json={}, headers={"If-Match": "x"}
                    ).status_code == 422  # fmt: skip
    valid = api.call("POST", "/dry-run", editor,
                     json={"documents": [{"kind": "Asset", **asset("y", "acme-foods")}]})  # fmt: skip
    assert valid.json() == {"valid": True, "issues": []}
    invalid = api.call("POST", "/dry-run", editor, json={"deletes": [
        {"kind": "RouteGroup", "id": "rg-critical-webhook"}]})  # fmt: skip
    assert not invalid.json()["valid"] and invalid.json()["issues"][0]["id"] == "freezer-03"


def test_tokens_over_http(api: RunningApi) -> None:
    admin = api.token("factory-alpha", "admin")
    made = api.call("POST", "/tokens", admin,
                    json={"orgId": "alpha-cold-room-2", "role": "viewer", "name": "room2"})  # fmt: skip
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    assert secret.startswith("ert_") and made.json()["active"]
    assert secret not in (api.store.root.parent / "tokens.json").read_text()  # hash only
    assert (api.store.root.parent / "tokens.json").stat().st_mode & 0o777 == 0o600
    whoami = api.call("GET", "/whoami", secret).json()
    assert (whoami["orgId"], whoami["role"], whoami["pathKey"]) == (
        "alpha-cold-room-2", "viewer", "0001/0001/0001/0001/0001/0002"
    )  # fmt: skip
    listed = api.call("GET", "/tokens", admin).json()["items"]
    assert {t["orgId"] for t in listed} == {"factory-alpha", "alpha-cold-room-2"}
    assert "tokenHash" not in listed[0]
    outside = api.call("POST", "/tokens", admin, json={"orgId": "depot-beta", "role": "viewer"})
    assert outside.status_code == 404
    revoked = api.call("DELETE", f"/tokens/{made.json()['id']}", admin)
    assert revoked.status_code == 200 and not revoked.json()["active"]
    assert api.call("GET", "/whoami", secret).status_code == 401


def test_the_openapi_document_covers_every_route(api: RunningApi) -> None:
    spec = api.client.get("/openapi.json").json()
    served = {
        (method.lower(), path) for path, methods in _routes(api) for method in methods
        if path.startswith(PREFIX)
    }  # fmt: skip
    documented = {(m, p) for p, item in spec["paths"].items() for m in item if m != "servers"}
    assert served and served <= documented
    # per kind 7 operations; whoami, apply, dry-run, 4 tokens; the 2 test runs (templates,
    # business rules), on paths of their own
    assert len(served) == 8 * 7 + 7 + 2
    assert len([p for p in spec["paths"] if p.startswith(PREFIX)]) == 8 * 4 + 5 + 2
    for kind in ("Asset", "Organization", "Rule", "BusinessRule", "Trigger", "DataSource",
                 "AssetTemplate", "RouteGroup"):  # fmt: skip
        assert spec["components"]["schemas"][kind]["properties"]["id"]["type"] == "string"
    create = spec["paths"][f"{PREFIX}/assets"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Asset"
    }
    assert "routeGroupIds" in spec["components"]["schemas"]["Asset"]["properties"]
    events = spec["paths"]["/api/v1/events"]
    assert events["servers"][0]["url"] == "http://127.0.0.1:8088"
    assert "ingress" in events["post"]["description"]
    assert "/api/v1/events/batch" in spec["paths"]
    assert spec["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    refs = {r for r in _refs(spec)}
    assert refs <= set(spec["components"]["schemas"]), refs - set(spec["components"]["schemas"])
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def _routes(api: RunningApi) -> list[tuple[str, set[str]]]:
    """Every served route's path and methods (an included router is walked: FastAPI keeps it
    as one entry of ``app.routes``)."""
    out: list[tuple[str, set[str]]] = []
    for route in api.app.app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            out += [(c.path, set(c.methods or ())) for c in contexts()]
        else:
            out.append((getattr(route, "path", ""), set(getattr(route, "methods", ()) or ())))
    return out


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_another_router_plugs_in_with_the_same_token_role_and_scope(tmp_path: Path) -> None:
    """What the other parts of the API (stored data, DLQ redrive, replay) plug in as."""
    router = APIRouter(prefix="/api/v1/extra")

    @router.get("/orgs")
    def orgs(request: Request, scope: Viewer) -> dict[str, object]:
        return {"orgs": sorted(scope.org_ids()), "pathKey": scope.path_key,
                "greeting": request.app.state.greeting}  # fmt: skip

    @router.post("/act")
    def act(scope: Editor) -> dict[str, str]:
        return {"by": scope.principal.name}

    for api in running_api(tmp_path, routers=[router]):
        viewer = api.token("alpha-a-floor-1", "viewer")
        got = api.client.get("/api/v1/extra/orgs", headers={"Authorization": f"Bearer {viewer}"})
        assert got.json() == {"orgs": ["alpha-a-floor-1", "alpha-cold-room-1",
                                       "alpha-cold-room-2"],
                              "pathKey": "0001/0001/0001/0001/0001", "greeting": "hello"}  # fmt: skip
        assert api.client.get("/api/v1/extra/orgs").status_code == 401
        ingest = api.token("alpha-a-floor-1", "ingest")
        assert api.client.get("/api/v1/extra/orgs",
                              headers={"Authorization": f"Bearer {ingest}"}).status_code == 403  # fmt: skip
        assert api.client.post("/api/v1/extra/act",
                               headers={"Authorization": f"Bearer {viewer}"}).status_code == 403  # fmt: skip
        spec = api.client.get("/openapi.json").json()
        assert "/api/v1/extra/orgs" in spec["paths"]
