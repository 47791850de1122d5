"""The management services on the in-memory twins: entities with scope and roles, history and
rollback, tokens. The sample tenant's tree:

    mapex > acme-foods > factory-alpha > alpha-bldg-a > alpha-a-floor-1 > alpha-cold-room-1
                                                                         > alpha-cold-room-2
                       > depot-beta
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventray.pipeline.adapters.memory_config import MemoryConfigStore
from eventray.pipeline.adapters.memory_tokens import MemoryTokenStore
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import ConfigError, ConfigIssue, RevisionConflictError
from eventray.pipeline.loader import read_documents
from eventray.pipeline.management import (
    LOCAL,
    EntityService,
    Forbidden,
    Invalid,
    NotFound,
    Principal,
    Referenced,
    Taken,
    TokenService,
    Unauthorized,
    hash_token,
)
from eventray.pipeline.management.redact import REDACTED
from eventray.pipeline.management.secrets import SecretHolders
from eventray.pipeline.ports import LOCAL_ADMIN
from eventray.pipeline.secret_store import MemorySecretStore, SealedSecret

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


def sample() -> list[dict[str, Any]]:
    issues: list[ConfigIssue] = []
    docs = [doc for _, doc in read_documents([TENANT], issues)]
    assert issues == []
    return docs


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return sample()


@pytest.fixture
def service(documents: list[dict[str, Any]]) -> EntityService:
    store = MemoryConfigStore()
    store.put(copy.deepcopy(documents))
    told: list[int] = []
    svc = EntityService(store, notify=lambda: told.append(store.revision()))
    svc.told = told  # type: ignore[attr-defined]
    return svc


def who(org: str | None, role: str = "viewer", name: str = "") -> Principal:
    return Principal(f"tok-{org}-{role}", name or f"{role}@{org}", org, role)  # type: ignore[arg-type]


def ids(service: EntityService, principal: Principal, kind: str, **filters: Any) -> list[str]:
    return [d["id"] for d in service.page(principal, kind, limit=1000, **filters).items]


def asset(entity_id: str, org: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "Asset", "id": entity_id, "orgId": org, "assetUUID": f"U-{entity_id}",
            "name": f"Asset {entity_id}", "templateId": "freezer-json",
            "routeGroupIds": ["rg-cold-chain"], **fields}  # fmt: skip


def test_lists_cover_the_scope_only(service: EntityService) -> None:
    room1, room2 = who("alpha-cold-room-1"), who("alpha-cold-room-2")
    assert ids(service, room1, "Asset") == ["freezer-01", "freezer-02"]
    assert ids(service, room2, "Asset") == ["freezer-03", "lora-th-01"]
    assert ids(service, who("factory-alpha"), "Asset") == [
        "freezer-01", "freezer-02", "freezer-03", "lora-th-01"
    ]  # fmt: skip
    assert ids(service, who("depot-beta"), "Asset") == ["lora-door-01"]
    assert len(ids(service, who("mapex"), "Asset")) == 5
    assert len(ids(service, LOCAL, "Asset")) == 5
    # Organizations: its own and below; ancestors are outside the scope too.
    assert ids(service, room1, "Organization") == ["alpha-cold-room-1"]
    assert ids(service, who("alpha-a-floor-1"), "Organization") == [
        "alpha-a-floor-1", "alpha-cold-room-1", "alpha-cold-room-2"
    ]  # fmt: skip
    # acme-foods' shared templates, triggers and rules are not readable by a site's tokens.
    assert ids(service, who("factory-alpha"), "AssetTemplate") == []
    assert ids(service, who("factory-alpha"), "Trigger") == []
    assert ids(service, who("acme-foods"), "AssetTemplate") == ["em300-th", "freezer-json",
                                                                "ws301-door"]  # fmt: skip


def test_list_filters_and_cursor_pages(service: EntityService) -> None:
    admin = who("acme-foods")
    assert ids(service, admin, "Asset", org_id="alpha-cold-room-2") == ["freezer-03", "lora-th-01"]
    assert ids(service, admin, "Asset", org_id="factory-alpha") == []
    assert len(ids(service, admin, "Asset", org_id="factory-alpha", include_children=True)) == 4
    assert ids(service, admin, "Asset", name="DOOR") == ["lora-door-01"]
    assert ids(service, admin, "Asset", enabled=False) == []
    # An organization outside the scope gives an empty page, as an unknown one does.
    assert ids(service, who("alpha-cold-room-1"), "Asset", org_id="alpha-cold-room-2") == []
    assert ids(service, who("alpha-cold-room-1"), "Asset", org_id="nope") == []
    seen, cursor = [], None
    while True:
        page = service.page(admin, "Asset", limit=2, cursor=cursor)
        seen += [d["id"] for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 5
    with pytest.raises(Invalid):
        service.page(admin, "Asset", cursor="!!!not-a-cursor")
    with pytest.raises(Invalid):
        service.page(admin, "Asset", limit=0)


def test_get_answers_not_found_outside_the_scope(service: EntityService) -> None:
    doc, revision = service.get(who("alpha-cold-room-1"), "Asset", "freezer-01")
    assert (doc["orgId"], revision) == ("alpha-cold-room-1", 1)
    with pytest.raises(NotFound) as outside:
        service.get(who("alpha-cold-room-1"), "Asset", "freezer-03")
    with pytest.raises(NotFound) as unknown:
        service.get(who("alpha-cold-room-1"), "Asset", "no-such-asset")
    # Both answers list the ids the caller may see, and only those: the same for an id outside
    # the scope as for one that does not exist, so nothing of another tenant leaks.
    assert str(outside.value) == (
        "no Asset 'freezer-03'; did you mean freezer-02, freezer-01? valid: freezer-01, freezer-02"
    )
    assert str(unknown.value) == "no Asset 'no-such-asset'; valid: freezer-01, freezer-02"
    org, _ = service.get(who("factory-alpha"), "Organization", "alpha-cold-room-2")
    assert org["pathKey"] == "0001/0001/0001/0001/0001/0002"


def test_roles(service: EntityService) -> None:
    with pytest.raises(Forbidden):
        service.create(who("alpha-cold-room-1", "viewer"), "Asset", asset("x", "alpha-cold-room-1"))
    for action in (
        lambda p: service.page(p, "Asset"),
        lambda p: service.get(p, "Asset", "freezer-01"),
        lambda p: service.history(p, "Asset", "freezer-01"),
    ):
        with pytest.raises(Forbidden):
            action(who("alpha-cold-room-1", "ingest"))


def test_create_update_delete_with_history(service: EntityService) -> None:
    editor = who("alpha-cold-room-1", "editor", "ops-bot")
    written = service.create(editor, "Asset", asset("freezer-09", "alpha-cold-room-1"))
    assert written.changes == [{"kind": "Asset", "id": "freezer-09", "op": "create", "revision": 1}]
    assert service.told == [written.store_revision]  # type: ignore[attr-defined]
    with pytest.raises(Taken):
        service.create(editor, "Asset", asset("freezer-09", "alpha-cold-room-1"))
    with pytest.raises(Taken):  # an id taken elsewhere: the same answer, nothing more
        service.create(editor, "Asset", asset("freezer-03", "alpha-cold-room-1"))
    renamed = asset("freezer-09", "alpha-cold-room-1", name="Freezer nine")
    with pytest.raises(RevisionConflictError):
        service.update(editor, "Asset", "freezer-09", renamed, expected=7)
    service.update(editor, "Asset", "freezer-09", renamed, expected=1)
    assert service.get(editor, "Asset", "freezer-09")[1] == 2
    service.delete(editor, "Asset", "freezer-09")
    history = service.history(editor, "Asset", "freezer-09")  # after the delete too
    assert [(h["revision"], h["op"], h["author"]) for h in history] == [
        (1, "create", {"name": "ops-bot", "id": "tok-alpha-cold-room-1-editor"}),
        (2, "update", {"name": "ops-bot", "id": "tok-alpha-cold-room-1-editor"}),
        (3, "delete", {"name": "ops-bot", "id": "tok-alpha-cold-room-1-editor"}),
    ]
    assert history[1]["diff"] == [
        {"op": "replace", "path": "name", "from": "Asset freezer-09", "to": "Freezer nine"}
    ]
    with pytest.raises(NotFound):  # a sibling does not see the deleted asset's history
        service.history(who("alpha-cold-room-2"), "Asset", "freezer-09")
    # Rollback to revision 2 brings it back, as a new change.
    service.rollback(editor, "Asset", "freezer-09", 2)
    doc, revision = service.get(editor, "Asset", "freezer-09")
    assert (doc["name"], revision) == ("Freezer nine", 4)
    last = service.history(editor, "Asset", "freezer-09")[-1]
    assert (last["op"], last["note"]) == ("create", "rollback to revision 2")
    service.rollback(editor, "Asset", "freezer-09", 1)
    assert service.get(editor, "Asset", "freezer-09")[0]["name"] == "Asset freezer-09"
    service.rollback(editor, "Asset", "freezer-09", 3)  # back to deleted
    with pytest.raises(NotFound):
        service.get(editor, "Asset", "freezer-09")
    with pytest.raises(Invalid):
        service.rollback(editor, "Asset", "freezer-09", 99)


def test_validation_problems_name_the_field_and_reason(service: EntityService) -> None:
    editor = who("alpha-cold-room-1", "editor")
    with pytest.raises(ConfigError) as bad:
        service.create(editor, "Asset", asset("x1", "alpha-cold-room-1", routeGroupIds=[]))
    assert [(i.path, i.source) for i in bad.value.issues] == [("routeGroupIds", "request")]
    with pytest.raises(ConfigError) as unknown:
        service.create(editor, "Asset", asset("x2", "alpha-cold-room-1", templateId="nope"))
    assert [(i.path, i.reason) for i in unknown.value.issues] == [
        ("templateId", "unknown asset template 'nope'")
    ]
    assert service.dry_run(editor, [asset("x3", "alpha-cold-room-1", templateId="nope")])[
        0
    ].path == ("templateId")
    assert service.dry_run(editor, [asset("x3", "alpha-cold-room-1")]) == []
    assert ids(service, editor, "Asset") == ["freezer-01", "freezer-02"]  # nothing written


def test_no_other_tenant_is_named_or_touched(service: EntityService) -> None:
    room1 = who("alpha-cold-room-1", "editor")
    # Creating in a sibling's organization: "unknown organization", as for one that is not.
    with pytest.raises(ConfigError) as there:
        service.create(room1, "Asset", asset("y1", "alpha-cold-room-2"))
    assert [(i.path, i.reason) for i in there.value.issues] == [
        ("orgId", "unknown organization 'alpha-cold-room-2'")
    ]
    with pytest.raises(NotFound):
        service.update(room1, "Asset", "freezer-03", asset("freezer-03", "alpha-cold-room-1"))
    with pytest.raises(NotFound):
        service.delete(room1, "Asset", "freezer-03")
    with pytest.raises(NotFound):
        service.rollback(room1, "Asset", "freezer-03", 1)
    # Moving its own asset to a sibling is creating there.
    with pytest.raises(ConfigError):
        service.update(room1, "Asset", "freezer-01", asset("freezer-01", "alpha-cold-room-2"))
    # Depot beta's data source fixed to a cold room's asset: the asset is unknown to it.
    depot = who("depot-beta", "editor")
    source = {"kind": "DataSource", "id": "ds-x", "orgId": "depot-beta", "name": "x",
              "protocol": "http", "auth": {"type": "none"},
              "assetBind": {"fixedAssetId": "freezer-01"}}  # fmt: skip
    with pytest.raises(ConfigError) as fixed:
        service.create(depot, "DataSource", source)
    assert [i.reason for i in fixed.value.issues] == ["unknown asset 'freezer-01'"]
    # The catalog refuses it too, for anyone (the local admin sees why).
    with pytest.raises(ConfigError) as local:
        service.create(LOCAL, "DataSource", source)
    assert "is neither 'depot-beta''s nor below it" in local.value.issues[0].reason


def test_own_organization_cannot_be_moved_or_deleted(service: EntityService) -> None:
    admin = who("factory-alpha", "admin")
    doc, _ = service.get(admin, "Organization", "factory-alpha")
    with pytest.raises(Forbidden):
        service.update(admin, "Organization", "factory-alpha", {**doc, "parentId": "depot-beta"})
    service.update(admin, "Organization", "factory-alpha", {**doc, "name": "Factory A"})
    with pytest.raises(Forbidden):
        service.delete(admin, "Organization", "factory-alpha")
    with pytest.raises(Forbidden):
        service.create(admin, "Organization", {"id": "new-root", "name": "R", "type": "vendor"})
    service.create(admin, "Organization", {"id": "alpha-lab", "name": "Lab", "type": "building",
                                           "parentId": "factory-alpha"})  # fmt: skip
    assert "alpha-lab" in ids(service, who("factory-alpha"), "Organization")


def test_delete_of_what_is_still_used_names_the_referrers(service: EntityService) -> None:
    with pytest.raises(Referenced) as used:
        service.delete(who("acme-foods", "editor"), "RouteGroup", "rg-critical-webhook")
    assert used.value.referrers == [("Asset", "freezer-03", "routeGroupIds[1]")]
    with pytest.raises(Referenced) as room:
        service.delete(who("factory-alpha", "editor"), "Organization", "alpha-cold-room-1")
    assert {r[1] for r in room.value.referrers} == {"freezer-01", "freezer-02"}
    with pytest.raises(Referenced) as trigger:
        service.delete(LOCAL, "Trigger", "slack-ops")
    assert trigger.value.referrers == [("Rule", "high-temp-alert", "actions[3].triggerId")]


def test_an_organization_with_secrets_is_not_deleted_until_they_are(
    documents: list[dict[str, Any]],
) -> None:
    store, secrets = MemoryConfigStore(), MemorySecretStore()
    store.put(copy.deepcopy(documents))
    service = EntityService(store, holders=SecretHolders(secrets))
    service.create(LOCAL, "Organization", {"kind": "Organization", "id": "depot-gamma",
                                           "name": "Depot Gamma", "type": "site",
                                           "parentId": "acme-foods"})  # fmt: skip
    secrets.put(SealedSecret("depot-gamma", "SMTP_PASSWORD", False, "v1:x",
                             datetime.now(UTC), LOCAL_ADMIN))  # fmt: skip
    with pytest.raises(Referenced) as held:
        service.delete(who("acme-foods", "editor"), "Organization", "depot-gamma")
    assert held.value.referrers == [("Secret", "SMTP_PASSWORD", "orgId")]
    assert "Secret 'SMTP_PASSWORD' (orgId)" in str(held.value)
    secrets.delete("depot-gamma", "SMTP_PASSWORD", at=datetime.now(UTC), author=LOCAL_ADMIN)
    service.delete(who("acme-foods", "editor"), "Organization", "depot-gamma")


def test_system_rules_read_by_all_written_by_root_admins(service: EntityService) -> None:
    condition = {"type": "condition", "data": {"field": {"type": "event", "value": "data.t"},
                                               "operator": "exists", "value": {"type": "literal", "value": True}}}  # fmt: skip
    rule = {"kind": "Rule", "id": "sys-any", "system": True, "actions": [],
            "when": {"logic": "AND", "items": [condition]}}  # fmt: skip
    with pytest.raises(Forbidden):
        service.create(who("acme-foods", "admin"), "Rule", rule)
    with pytest.raises(Forbidden):
        service.create(who("mapex", "editor"), "Rule", rule)
    service.create(who("mapex", "admin"), "Rule", rule)
    assert ids(service, who("alpha-cold-room-1"), "Rule") == ["sys-any"]


def test_secrets_are_write_only(service: EntityService) -> None:
    editor = who("alpha-cold-room-1", "editor")
    device = asset("frz-77", "alpha-cold-room-1",
                   protocol={"type": "http", "mqtt": None})  # fmt: skip
    service.create(editor, "Asset", device)
    source, _ = service.get(LOCAL, "DataSource", "ds-gateway-http")
    assert source["auth"]["key"] == REDACTED
    service.update(LOCAL, "DataSource", "ds-gateway-http", {**source, "name": "renamed"})
    stored = next(d for d in service.store.documents() if d["id"] == "ds-gateway-http")
    assert stored["auth"]["key"] == "sample-key-change-me-0001"  # kept, not "<redacted>"
    history = service.history(LOCAL, "DataSource", "ds-gateway-http")
    assert all(h["after"]["auth"]["key"] == REDACTED for h in history)


def test_tokens(service: EntityService) -> None:
    clock = ManualClock(datetime(2026, 5, 1, tzinfo=UTC))
    tokens = TokenService(MemoryTokenStore(), clock=clock)
    root = service.scope(LOCAL)
    issued = tokens.create(root, org_id="factory-alpha", role="admin", name="alpha-admin",
                           expires_days=1)  # fmt: skip
    assert issued.token.startswith("ert_") and len(issued.token) > 40
    assert issued.record.token_hash == hash_token(issued.token) != issued.token
    principal = tokens.authenticate(issued.token)
    assert (principal.org_id, principal.role, principal.name) == ("factory-alpha", "admin",
                                                                  "alpha-admin")  # fmt: skip
    scope = service.scope(principal)
    viewer = tokens.create(scope, org_id="alpha-cold-room-1", role="viewer")
    with pytest.raises(NotFound):
        tokens.create(scope, org_id="depot-beta", role="viewer")
    other = tokens.create(root, org_id="depot-beta", role="admin")
    assert [r.org_id for r in tokens.list_tokens(scope)] == ["factory-alpha", "alpha-cold-room-1"]
    with pytest.raises(NotFound):
        tokens.revoke(scope, other.record.id)
    with pytest.raises(Forbidden):
        tokens.list_tokens(service.scope(tokens.authenticate(viewer.token)))
    tokens.revoke(scope, viewer.record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.authenticate(viewer.token)
    with pytest.raises(Unauthorized, match="unknown"):
        tokens.authenticate("ert_guessed")
    with pytest.raises(Unauthorized, match="no API token"):
        tokens.authenticate(None)
    clock.advance(seconds=timedelta(days=1).total_seconds())
    with pytest.raises(Unauthorized, match="expired"):
        tokens.authenticate(issued.token)
    # A token whose organization is deleted stops working.
    lab = tokens.create(root, org_id="depot-beta", role="viewer")
    service.delete(LOCAL, "Asset", "lora-door-01")
    service.delete(LOCAL, "Organization", "depot-beta")
    with pytest.raises(Unauthorized, match="gone"):
        service.scope(tokens.authenticate(lab.token))
