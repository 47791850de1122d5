"""Each actor is handed its own role's endpoints: its own users on the embedded servers, no
URL of a server it does not use, and never the admin's passwords."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from eventray.cluster.roles import ROLES, role_endpoints
from eventray.cluster.wiring import Endpoints, NotForThisRole, Wiring
from eventray.config.settings import load_settings

ADMIN = Endpoints(
    nats_url="nats://admin:admin-pw@127.0.0.1:4222",
    redis_url="redis://:default-pw@127.0.0.1:6379/0",
    chdb_path=Path("/data/chdb"),
    clickhouse_url=None,
    config_dir=Path("/data/config"),
    mongodb_url=None,
    blob_dir=Path("/data/blobs"),
)


class Embedded:
    """Stands in for a running embedded server: a URL per user."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def url_for(self, user: str) -> str:
        return f"{self.scheme}://{user}:{user}-pw@127.0.0.1:1"


def user(url: str) -> str | None:
    return urlsplit(url).username if url else None


def embedded() -> dict[str, Endpoints]:
    nats: Any = Embedded("nats")
    redis: Any = Embedded("redis")
    return dict(role_endpoints(ADMIN, nats=nats, redis=redis))


def test_each_role_gets_its_own_users_and_only_the_servers_it_uses() -> None:
    roles = embedded()
    assert set(roles) == set(ROLES)
    users = {role: (user(e.nats_url), user(e.redis_url)) for role, e in roles.items()}
    assert users == {
        "admin": ("admin", "default"),
        "ingress": ("ingress", None),
        "lane": ("lane", "rules"),
        "rules": (None, "rules"),
        "store": (None, None),
        "api": ("api", None),
        "replay": ("replay", None),
    }
    assert roles["rules"].redis_url == "redis://rules:rules-pw@127.0.0.1:1"
    assert roles["rules"].nats_url == ""
    assert {r for r, e in roles.items() if e.chdb_path is not None} == {"admin", "store"}
    assert {r: e.nats_inbox for r, e in roles.items()} == {
        "admin": "_INBOX", "ingress": "_INBOX.ingress", "lane": "_INBOX.lane",
        "rules": "_INBOX.rules", "store": "_INBOX.store", "api": "_INBOX.api",
        "replay": "_INBOX.replay",
    }  # fmt: skip
    for role, endpoints in roles.items():
        assert endpoints.config_dir == ADMIN.config_dir, role  # every actor reads the catalog


def test_servers_the_operator_named_are_given_as_they_are_to_every_role_using_them() -> None:
    roles = role_endpoints(ADMIN)
    assert roles["ingress"].nats_url == roles["lane"].nats_url == ADMIN.nats_url
    assert roles["lane"].redis_url == roles["rules"].redis_url == ADMIN.redis_url
    assert roles["ingress"].redis_url == roles["store"].redis_url == roles["store"].nats_url == ""


def test_an_actor_s_wiring_holds_its_role_only() -> None:
    wiring = Wiring(load_settings(), ADMIN, embedded())  # type: ignore[arg-type]
    ingress = wiring.for_role("ingress")
    assert ingress.endpoints.nats_url == "nats://ingress:ingress-pw@127.0.0.1:1"
    assert not ingress.roles  # it could not hand out another role's wiring
    assert ingress.stream().inbox_prefix == "_INBOX.ingress"
    with pytest.raises(NotForThisRole):
        ingress.state_store()
    with pytest.raises(NotForThisRole):
        wiring.for_role("store").stream()
    with pytest.raises(NotForThisRole):
        wiring.for_role("lane").event_store()


def test_endpoints_never_show_a_password() -> None:
    shown = repr(embedded()["lane"]) + repr(ADMIN)
    assert "pw" not in shown and "lane:***@127.0.0.1:1" in shown
