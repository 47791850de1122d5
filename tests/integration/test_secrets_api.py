"""The management API's secrets over real HTTP (uvicorn on a free port, the file stores):
write-only (no answer, log line or stored byte holds a value), roles, tenant isolation
between two sibling cold rooms and their parent floor, 503 without a key, and the OpenAPI
document."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventray.actors.api_app import PREFIX
from eventray.actors.api_secrets import secrets_router
from eventray.pipeline.adapters.secrets_enc import FileSecretStore
from eventray.pipeline.management import LOCAL
from eventray.pipeline.management.secrets import SecretService
from eventray.pipeline.secret_crypto import SecretCipher
from eventray.pipeline.secret_store import StoredSecrets
from eventray.pipeline.secrets import LayeredSecrets
from tests.integration.apikit import RunningApi, running_api

pytestmark = pytest.mark.services

A, B, PARENT = "alpha-cold-room-1", "alpha-cold-room-2", "alpha-a-floor-1"
KEY = os.urandom(32)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    for running in running_api(tmp_path / "api", routers=(secrets_router(),)):
        store = FileSecretStore(path=tmp_path / "api" / "secrets.enc")
        running.app.app.state.secrets = SecretService(store, SecretCipher(KEY))
        yield running


def everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_secrets_are_write_only_through_the_api(
    api: RunningApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    editor = api.token("acme-foods", "editor", name="ops-editor")
    viewer = api.token("acme-foods", "viewer")
    values = ["api-value-one-7f3a", "api-value-two-91c2", "shared-value-4b8d"]
    with caplog.at_level(logging.DEBUG):
        created = api.call("PUT", "/secrets/acme-foods/OPS_TOKEN", editor,
                           json={"value": values[0]})  # fmt: skip
        assert created.status_code == 201, created.text
        assert created.json() == {
            "orgId": "acme-foods", "name": "OPS_TOKEN", "shared": False,
            "updated": created.json()["updated"], "created": True,
            "updatedBy": {"name": "ops-editor", "id": created.json()["updatedBy"]["id"]},
        }  # fmt: skip
        rotated = api.call("PUT", "/secrets/acme-foods/OPS_TOKEN", editor,
                           json={"value": values[1]})  # fmt: skip
        assert rotated.status_code == 200 and rotated.json()["created"] is False
        shared = api.call("PUT", "/secrets/factory-alpha/SMTP", editor,
                          json={"value": values[2], "shared": True})  # fmt: skip
        assert shared.status_code == 201
        answers = [created, rotated, shared]
        answers.append(api.call("GET", "/secrets", viewer))
        answers.append(api.call("GET", "/secrets/acme-foods/OPS_TOKEN", viewer))
        answers.append(api.call("GET", "/secrets/changes", viewer))
        answers.append(api.call("GET", "/openapi.json"))
        assert [a.status_code for a in answers] == [201, 200, 201, 200, 200, 200, 200]
        listed = answers[3].json()["items"]
        assert [(i["orgId"], i["name"], i["shared"]) for i in listed] == [
            ("acme-foods", "OPS_TOKEN", False), ("factory-alpha", "SMTP", True)]  # fmt: skip
        changes = answers[5].json()["items"]
        assert [(c["name"], c["op"], c["author"]["name"]) for c in changes] == [
            ("OPS_TOKEN", "set", "ops-editor"), ("OPS_TOKEN", "set", "ops-editor"),
            ("SMTP", "set", "ops-editor")]  # fmt: skip
        # the lanes' view opens the rotated value, and the shared one down the tree
        store = api.app.app.state.secrets.store
        lanes = LayeredSecrets([StoredSecrets(store, SecretCipher(KEY), background=False)])
        provider = lanes.for_org(("factory-alpha", "acme-foods"))
        assert (provider.secret("OPS_TOKEN"), provider.secret("SMTP")) == (None, values[2])
        assert lanes.for_org(("acme-foods",)).secret("OPS_TOKEN") == values[1]
        deleted = api.call("DELETE", "/secrets/acme-foods/OPS_TOKEN", editor)
        assert deleted.status_code == 200 and deleted.json()["name"] == "OPS_TOKEN"
        answers.append(deleted)
        assert api.call("DELETE", "/secrets/acme-foods/OPS_TOKEN", editor).status_code == 404
    for value in values:
        assert not any(value in a.text for a in answers)
        assert value not in caplog.text
        assert value.encode() not in everything_under(tmp_path)  # store, tokens, config
    assert "SMTP" in caplog.text  # the change was logged, by name
    assert b"v1:" in (tmp_path / "api" / "secrets.enc").read_bytes()  # sealed values only
    assert (tmp_path / "api" / "secrets.enc").stat().st_mode & 0o777 == 0o600


def test_roles_validation_and_a_stack_without_a_key(api: RunningApi) -> None:
    viewer = api.token(A, "viewer")
    editor = api.token(A, "editor")
    ingest = api.token(A, "ingest")
    body = {"value": "v"}
    assert api.call("PUT", f"/secrets/{A}/X", viewer, json=body).status_code == 403
    assert api.call("GET", "/secrets", ingest).status_code == 403
    assert api.call("PUT", f"/secrets/{A}/X", None, json=body).status_code == 401
    for bad, path in (({"value": ""}, "value"), ({"value": 1}, "value"),
                      ({"value": "v", "extra": 1}, "extra"), ({}, "value"),
                      ({"value": "v", "shared": "maybe"}, "shared")):  # fmt: skip
        answer = api.call("PUT", f"/secrets/{A}/X", editor, json=bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["issues"][0]["path"] == path
    named = api.call("PUT", f"/secrets/{A}/1X", editor, json=body)
    assert named.status_code == 422 and named.json()["issues"][0]["path"] == "name"
    huge = api.call("PUT", f"/secrets/{A}/X", editor, json={"value": "x" * 70_000})
    assert huge.status_code == 422 and "x" * 100 not in huge.text
    assert api.call("PUT", f"/secrets/{A}/X", editor, content=b"{not json").status_code == 422
    api.app.app.state.secrets = SecretService(api.app.app.state.secrets.store, None)
    refused = api.call("PUT", f"/secrets/{A}/X", editor, json=body)
    assert refused.status_code == 503 and "EVENTRAY_SECRETS__KEY" in refused.json()["error"]
    assert api.call("GET", "/secrets", viewer).json() == {"items": []}  # names still list
    spec = api.call("GET", "/openapi.json").json()
    paths = spec["paths"]
    assert set(paths[f"{PREFIX}/secrets/{{orgId}}/{{name}}"]) == {"get", "put", "delete"}
    assert set(paths[f"{PREFIX}/secrets"]) == {"get"} and f"{PREFIX}/secrets/changes" in paths
    out = spec["components"]["schemas"]["SecretOut"]["properties"]
    assert "value" not in out and "sealed" not in out
    from openapi_spec_validator import validate

    validate(spec)  # still a valid OpenAPI 3.1 document with the secrets routes in it


def test_a_tenant_reads_changes_and_deletes_no_secret_of_its_sibling(api: RunningApi) -> None:
    service: SecretService = api.app.app.state.secrets
    scope = api.entities.scope(LOCAL)
    service.put(scope, B, "B_TOKEN", "b-secret-value-0c1d")
    service.put(scope, A, "A_TOKEN", "a-secret-value-5e6f")
    before = [(r.org_id, r.name, r.sealed) for r in service.store.all()]
    tokens = {role: api.token(A, role) for role in ("viewer", "editor", "admin")}
    parent = api.token(PARENT, "viewer")
    cases = [
        ("GET", f"/secrets/{B}/B_TOKEN", None, {"viewer": 404, "editor": 404, "admin": 404}),
        ("GET", f"/secrets/{B}/NONE", None, {"viewer": 404, "editor": 404, "admin": 404}),
        ("PUT", f"/secrets/{B}/B_TOKEN", {"value": "overwritten"},
         {"viewer": 403, "editor": 404, "admin": 404}),
        ("PUT", f"/secrets/{B}/NEW", {"value": "planted"},
         {"viewer": 403, "editor": 404, "admin": 404}),
        ("PUT", f"/secrets/{PARENT}/UP", {"value": "planted"},  # an ancestor
         {"viewer": 403, "editor": 404, "admin": 404}),
        ("PUT", "/secrets/no-such-org/X", {"value": "planted"},
         {"viewer": 403, "editor": 404, "admin": 404}),
        ("DELETE", f"/secrets/{B}/B_TOKEN", None, {"viewer": 403, "editor": 404, "admin": 404}),
        ("GET", f"/secrets?orgId={B}", None, {"viewer": 200, "editor": 200, "admin": 200}),
        ("GET", f"/secrets?orgId={PARENT}&includeChildren=true", None,
         {"viewer": 200, "editor": 200, "admin": 200}),
        ("GET", f"/secrets/changes?orgId={B}", None, {"viewer": 200, "editor": 200, "admin": 200}),
        ("GET", "/secrets/changes", None, {"viewer": 200, "editor": 200, "admin": 200}),
    ]  # fmt: skip
    for method, path, body, expected in cases:
        for role, status in expected.items():
            answer = api.call(method, path, tokens[role], json=body)
            assert answer.status_code == status, (method, path, role, answer.text)
            if status == 404:  # outside the scope reads exactly as unknown: the same answer
                elsewhere = path.replace(B, "no-such-org").replace(PARENT, "no-such-org")
                twin = api.call(method, elsewhere, tokens[role], json=body)
                assert twin.status_code == 404

                def hide(text: str) -> str:
                    return text.replace(B, "?").replace(PARENT, "?").replace("no-such-org", "?")

                assert hide(answer.text) == hide(twin.text), (method, path, role)
            elif status == 200:
                assert B not in answer.text and "B_TOKEN" not in answer.text, (method, path)
    assert [(r.org_id, r.name, r.sealed) for r in service.store.all()] == before
    mine = api.call("GET", "/secrets", tokens["viewer"]).json()["items"]
    assert [(i["orgId"], i["name"]) for i in mine] == [(A, "A_TOKEN")]
    both = api.call("GET", "/secrets", parent).json()["items"]
    assert {(i["orgId"], i["name"]) for i in both} == {(A, "A_TOKEN"), (B, "B_TOKEN")}
    assert api.call("GET", f"/secrets/{B}/B_TOKEN", parent).status_code == 200
    below = api.call("GET", f"/secrets?orgId={PARENT}&includeChildren=true", parent).json()
    assert len(below["items"]) == 2
    changes = api.call("GET", "/secrets/changes", tokens["admin"]).json()["items"]
    assert [(c["orgId"], c["name"]) for c in changes] == [(A, "A_TOKEN")]


def test_no_generated_request_makes_a_server_error(api: RunningApi) -> None:
    """Schemathesis over the secrets operations of the document (as test_management_fuzz does
    for the rest), with a root admin token: 4xx or 2xx, only the statuses listed, never 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error, status_code_conformance

    from tests.integration.test_management_fuzz import _other_checks

    headers = {"Authorization": f"Bearer {api.token('mapex', 'admin', name='fuzz')}"}
    spec = api.client.get("/openapi.json").json()
    spec["paths"] = {p: v for p, v in spec["paths"].items() if p.startswith(f"{PREFIX}/secrets")}
    operations = [r.ok() for r in schemathesis.openapi.from_dict(spec).get_all_operations()]
    assert len(operations) == 5
    statuses: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=api.url, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
            case.validate_response(
                response, checks=[not_a_server_error, status_code_conformance],
                excluded_checks=_other_checks(), headers=headers,
            )  # fmt: skip

        run()
    assert {200, 404} <= set(statuses) and max(statuses) < 500, statuses
