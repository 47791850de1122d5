"""The management API's OpenAPI document, loaded from the app without a server: it is a valid
OpenAPI 3.1 document, every served route is in it with its method (the routes over stored
data, the DLQ and replay included), every reference resolves,
every entity kind's schema is there, and the ingestion endpoints are documented with the
ingress as their server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from openapi_spec_validator import validate

from eventray.actors.api_app import PREFIX, build_app
from eventray.actors.api_overview import overview_router
from eventray.actors.api_reads import reads_router
from eventray.actors.api_replay import replay_router
from eventray.pipeline.adapters.memory_config import MemoryConfigStore
from eventray.pipeline.adapters.memory_tokens import MemoryTokenStore
from eventray.pipeline.management import SLUGS, EntityService, TokenService
from eventray.pipeline.models import ENTITY_KINDS

DATA_ROUTES = {
    ("get", "/events"), ("get", "/events/{event_tracker_id}/story"), ("get", "/logs/{kind}"),
    ("get", "/dlq"), ("post", "/dlq/redrive"), ("post", "/replays"), ("get", "/overview"),
}  # fmt: skip
"""Stored data, the Overview, the DLQ and replay (eventray.actors.api_reads, api_overview and
api_replay)."""
TEST_RUNS = {("post", "/asset-templates/test"), ("post", "/business-rules/test")}
"""The console's test runs (eventray.actors.api_sandbox), always served."""


def app() -> FastAPI:
    return build_app(EntityService(MemoryConfigStore()), TokenService(MemoryTokenStore()),
                     ingress_url="http://127.0.0.1:18088",
                     routers=[reads_router(), overview_router(), replay_router()])  # fmt: skip


def served(application: FastAPI) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for route in application.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        pairs = (
            [(c.path, c.methods or set()) for c in contexts()]
            if contexts is not None
            else [(getattr(route, "path", ""), getattr(route, "methods", set()) or set())]
        )
        out |= {(m.lower(), p) for p, methods in pairs for m in methods if p.startswith(PREFIX)}
    return out


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_valid_and_complete() -> None:
    application = app()
    spec = application.openapi()
    validate(spec)  # OpenAPI 3.1, every schema well formed
    documented = {(m, p) for p, item in spec["paths"].items() for m in item if m != "servers"}
    routes = served(application)
    assert len(routes) == len(SLUGS) * 7 + 7 + len(DATA_ROUTES) + len(TEST_RUNS)
    for method, path in TEST_RUNS:
        operation = spec["paths"][PREFIX + path][method]
        assert operation["security"] == [{"apiToken": []}], (method, path)
        assert {"401", "403", "404", "422"} <= set(operation["responses"]), (method, path)
    for method, path in DATA_ROUTES:
        operation = spec["paths"][PREFIX + path][method]
        assert operation["security"] == [{"apiToken": []}], (method, path)
        assert {"401", "403", "404", "422", "503"} <= set(operation["responses"]), (method, path)
    events = {p["name"] for p in spec["paths"][f"{PREFIX}/events"]["get"]["parameters"]}
    assert {"orgId", "includeChildren", "where", "cursor", "limit", "format", "all"} <= events
    kinds = spec["paths"][f"{PREFIX}/logs/{{kind}}"]["get"]["parameters"][0]["schema"]
    assert set(spec["components"]["schemas"][kinds["$ref"].rsplit("/", 1)[-1]]["enum"]) == {
        "rules", "captures", "triggers", "raw", "dlq", "scripts", "routers"}  # fmt: skip
    replay = spec["paths"][f"{PREFIX}/replays"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]  # fmt: skip
    assert {"orgId", "since", "state", "triggers"} <= set(
        spec["components"]["schemas"][replay]["properties"]
    )
    assert routes <= documented, routes - documented
    for kind, slug in SLUGS.items():
        for method, path in [("get", f"/{slug}"), ("post", f"/{slug}"), ("get", f"/{slug}/{{entity_id}}"),
                             ("put", f"/{slug}/{{entity_id}}"), ("delete", f"/{slug}/{{entity_id}}"),
                             ("get", f"/{slug}/{{entity_id}}/history"),
                             ("post", f"/{slug}/{{entity_id}}/rollback")]:  # fmt: skip
            operation = spec["paths"][PREFIX + path][method]
            assert operation["security"] == [{"apiToken": []}], (method, path)
            assert {"401", "403", "422"} <= set(operation["responses"]), (method, path)
        assert set(ENTITY_KINDS) <= set(spec["components"]["schemas"])
        assert spec["paths"][f"{PREFIX}/{slug}"]["post"]["requestBody"]["content"][
            "application/json"]["schema"] == {"$ref": f"#/components/schemas/{kind}"}  # fmt: skip
    names = set(spec["components"]["schemas"])
    assert {r.rsplit("/", 1)[-1] for r in refs(spec)} <= names
    assert all(r.startswith("#/components/schemas/") for r in refs(spec))
    # camelCase, as users write entities
    asset = spec["components"]["schemas"]["Asset"]["properties"]
    assert {"orgId", "assetUUID", "routeGroupIds", "debugEnabled"} <= set(asset)
    org = spec["components"]["schemas"]["Organization"]["properties"]
    assert {"parentId", "timezone", "retentionDays"} <= set(org)
    for path in ("/api/v1/events", "/api/v1/events/batch"):
        item = spec["paths"][path]
        assert item["servers"] == [{"url": "http://127.0.0.1:18088",
                                    "description": "the ingress (its own port, not the API's)"}]  # fmt: skip
        assert "ingress" in item["post"]["description"]
        assert {"201", "207"} & set(item["post"]["responses"])
