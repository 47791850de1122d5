"""Ingest-only API tokens as a data source's auth (``auth: {type: apiToken}``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from eventray.pipeline.adapters.memory_tokens import MemoryTokenStore
from eventray.pipeline.auth import authenticate
from eventray.pipeline.ingest_tokens import IngestTokens
from eventray.pipeline.management.tokens import hash_token
from eventray.pipeline.models.datasource import ApiTokenAuth, DataSource
from eventray.pipeline.ports import TokenRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PATHS = {"root": "root", "acme": "root/acme", "plant": "root/acme/plant", "globex": "root/globex"}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _token(store: MemoryTokenStore, name: str, org: str, role: str, **extra: object) -> str:
    token = f"ert_{name}-{'x' * 40}"
    store.add(TokenRecord(id=name, name=name, org_id=org, role=role,
                          token_hash=hash_token(token), created=NOW, **extra))  # type: ignore[arg-type]  # fmt: skip
    return token


def _check(tokens: IngestTokens, token: str, org: str) -> str | None:
    return asyncio.run(tokens.refusal(token, org_id=org, org_paths=PATHS))


def test_only_live_ingest_tokens_of_an_organization_above_the_data_source_pass() -> None:
    store = MemoryTokenStore()
    tokens = IngestTokens(store, now=lambda: NOW)
    acme = _token(store, "acme", "acme", "ingest")
    assert _check(tokens, acme, "acme") is None
    assert _check(tokens, acme, "plant") is None  # a child organization's data source
    assert _check(tokens, acme, "globex") == (
        "the API token's organization does not hold this data source"
    )
    assert _check(tokens, acme, "root") is not None  # not upwards
    plant = _token(store, "plant", "plant", "ingest")
    assert _check(tokens, plant, "acme") is not None
    admin = _token(store, "admin", "root", "admin")
    assert _check(tokens, admin, "acme") == (
        "API token role 'admin' may not send events (only ingest tokens may)"
    )
    viewer = _token(store, "viewer", "acme", "viewer")
    assert "role 'viewer' may not send events" in str(_check(tokens, viewer, "acme"))
    old = _token(store, "old", "acme", "ingest", expires=NOW - timedelta(seconds=1))
    assert _check(tokens, old, "acme") == "API token expired"
    gone = _token(store, "gone", "deleted-org", "ingest")
    assert _check(tokens, gone, "acme") is not None
    assert _check(tokens, "ert_" + "y" * 43, "acme") == "unknown API token"
    assert _check(tokens, "not-a-token", "acme") == "not an eventray API token (ert_...)"


def test_lookups_are_cached_for_the_ttl_so_a_revocation_takes_effect_after_it() -> None:
    store = MemoryTokenStore()
    clock = Clock()
    tokens = IngestTokens(store, ttl_s=2.0, now=lambda: NOW, monotonic=clock)
    acme = _token(store, "acme", "acme", "ingest")
    for _ in range(50):
        assert _check(tokens, acme, "acme") is None
    assert tokens.lookups == 1
    store.revoke("acme", NOW)
    assert _check(tokens, acme, "acme") is None  # within the cache's 2 s
    clock.t += 2.0
    assert _check(tokens, acme, "acme") == "API token revoked"
    assert tokens.lookups == 2
    # Unknown tokens are cached too, and the cache is bounded.
    small = IngestTokens(store, capacity=3, now=lambda: NOW, monotonic=clock)
    for i in range(10):
        _check(small, f"ert_random{i}", "acme")
    assert len(small._cache) == 3


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token in header Authorization"),
        ({"authorization": "Basic abc"}, "missing bearer token in header Authorization"),
        ({"authorization": "Bearer "}, "missing bearer token in header Authorization"),
    ],
)
def test_the_data_source_auth_reads_the_bearer_header(headers: dict[str, str], reason: str) -> None:
    result = asyncio.run(
        authenticate(
            ApiTokenAuth(),
            headers=headers,
            query={},
            client_ip="",
            org_id="acme",
            org_paths=PATHS,
            tokens=IngestTokens(MemoryTokenStore()),
        )
    )
    assert not result.ok and result.reason == reason


def test_without_a_token_store_the_data_source_refuses_and_the_model_parses() -> None:
    source = DataSource.model_validate(
        {
            "id": "ds",
            "orgId": "acme",
            "name": "gw",
            "auth": {"type": "apiToken"},
            "assetBind": {"fixedAssetId": "a"},
        }
    )
    assert isinstance(source.auth, ApiTokenAuth)
    result = asyncio.run(
        authenticate(
            source.auth,
            headers={"authorization": "Bearer ert_x"},
            query={},
            client_ip="",
            org_id="acme",
            org_paths=PATHS,
        )
    )
    assert not result.ok and "no token store" in result.reason
