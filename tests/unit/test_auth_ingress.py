"""Data-source authentication and ingress decisions, on the sample tenant."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventray.pipeline.auth import AuthResult
from eventray.pipeline.auth import authenticate as authenticate_async
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.ingress import HEADER_ORG, HEADER_SOURCE, Accepted, IngressPolicy, Refused
from eventray.pipeline.models.datasource import (
    ApiKeyAuth,
    DataSource,
    IpAllowlistAuth,
    JwtAuth,
    OAuth2Auth,
)
from eventray.pipeline.partitioning import partition_of

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: object, secret: str, alg: str = "HS256") -> str:
    head = _b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    body = _b64(orjson.dumps(claims))
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    sig = _b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), digest).digest())
    return f"{head}.{body}.{sig}"


def authenticate(auth: Any, **request: Any) -> AuthResult:
    return asyncio.run(authenticate_async(auth, **request))


def test_api_key_in_header_and_query() -> None:
    header = ApiKeyAuth.model_validate({"in": "header", "name": "X-Key", "key": "k" * 20})
    assert authenticate(header, headers={"x-key": "k" * 20}, query={}, client_ip="").ok
    assert (
        authenticate(header, headers={"x-key": "j" * 20}, query={}, client_ip="").reason
        == "invalid API key"
    )
    assert "missing API key" in authenticate(header, headers={}, query={}, client_ip="").reason
    query = ApiKeyAuth.model_validate({"in": "query", "name": "key", "key": "q" * 20})
    assert authenticate(query, headers={}, query={"key": "q" * 20}, client_ip="").ok


def test_jwt_signature_algorithm_and_times() -> None:
    auth = JwtAuth(secret="s3cret", algorithms=["HS256"])
    good = jwt({"sub": "gw", "exp": 2_000}, "s3cret")
    assert authenticate(
        auth, headers={"authorization": f"Bearer {good}"}, query={}, client_ip="", now=1_000
    ).ok
    expired = authenticate(auth, headers={"authorization": good}, query={}, client_ip="", now=3_000)
    assert expired.reason == "JWT expired"
    forged = jwt({"sub": "gw"}, "other")
    assert authenticate(auth, headers={"authorization": forged}, query={}, client_ip="").reason == (
        "JWT signature does not verify"
    )
    hs512 = jwt({"sub": "gw"}, "s3cret", alg="HS512")
    assert (
        "not allowed"
        in authenticate(auth, headers={"authorization": hs512}, query={}, client_ip="").reason
    )
    assert (
        authenticate(auth, headers={"authorization": "a.b"}, query={}, client_ip="").reason
        == "malformed JWT"
    )


def test_jwt_times_take_the_leeway_and_nbf_and_odd_tokens_are_refused_cleanly() -> None:
    auth = JwtAuth(secret="s3cret", algorithms=["HS256", "HS512"])

    def check(token: str, now: float, leeway_s: float = 0) -> str:
        result = authenticate(
            auth, headers={"authorization": token}, query={}, client_ip="", now=now,
            leeway_s=leeway_s,
        )  # fmt: skip
        return "ok" if result.ok else result.reason

    timed = jwt({"exp": 2_000, "nbf": 1_000}, "s3cret", alg="HS512")
    assert check(timed, 1_500) == "ok"
    assert check(timed, 2_010) == "JWT expired"
    assert check(timed, 2_010, leeway_s=30) == "ok"
    assert check(timed, 990) == "JWT not valid yet"
    assert check(timed, 990, leeway_s=30) == "ok"
    assert check(jwt({"exp": "tomorrow"}, "s3cret"), 1_000) == (
        "JWT claim 'exp' is invalid: Claim 'exp' must be a NumericDate value"
    )
    assert check(jwt({"iat": 5_000}, "s3cret"), 1_000) == "JWT issued in the future"
    assert check(jwt([1, 2], "s3cret"), 1_000) == "JWT claims are not an object"
    for odd in ("\udcff.a.b", "a.b.c.d", "....", "e30.e30.", "bm90IGpzb24.e30.x"):
        assert check(odd, 1_000) in ("malformed JWT", "JWT algorithm None is not allowed"), odd
    hs384 = jwt({}, "s3cret").replace("IUzI1NiIs", "IUzM4NCIs")  # header says HS384
    assert "not allowed" in check(hs384, 1_000)


def test_ip_allowlist_and_oauth2_without_key_sets() -> None:
    auth = IpAllowlistAuth(cidrs=["10.1.0.0/16", "127.0.0.1/32"])
    assert authenticate(auth, headers={}, query={}, client_ip="127.0.0.1").ok
    assert not authenticate(auth, headers={}, query={}, client_ip="10.2.0.1").ok
    assert "not an IP" in authenticate(auth, headers={}, query={}, client_ip="nope").reason
    oauth = OAuth2Auth.model_validate({"jwksUrl": "http://127.0.0.1/jwks"})
    assert authenticate(oauth, headers={}, query={}, client_ip="").reason == (
        "missing bearer token in header Authorization"
    )
    token = {"authorization": "Bearer " + jwt({"sub": "gw"}, "s3cret")}
    refused = authenticate(oauth, headers=token, query={}, client_ip="")
    assert (refused.status, refused.reason) == (
        401,
        "JWT algorithm 'HS256' is not allowed (a JWKS verifies RS*, PS*, ES* and EdDSA tokens)",
    )


def test_jwks_url_must_be_an_absolute_http_url() -> None:
    from pydantic import ValidationError

    for bad in ("/jwks", "file:///etc/passwd", "https://", "ftp://idp.example/jwks"):
        with pytest.raises(ValidationError, match="not an absolute https URL"):
            OAuth2Auth.model_validate({"jwksUrl": bad})


@pytest.fixture(scope="module")
def policy() -> IngressPolicy:
    catalog = load_catalog([SAMPLES / "tenant"], compile_scripts=False)
    return IngressPolicy(catalog, partitions=4, subject_prefix="eventray.in", max_body_bytes=1000)


def test_source_refusals(policy: IngressPolicy) -> None:
    def source(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(policy.source(*args, **kwargs))

    ok_headers = {"x-api-key": "sample-key-change-me-0001"}
    passed = source("ds-gateway-http", headers=ok_headers, query={}, client_ip="", body=b"")
    assert isinstance(passed, DataSource) and passed.id == "ds-gateway-http"
    missing = source(None, headers=ok_headers, query={}, client_ip="", body=b"")
    assert isinstance(missing, Refused) and missing.status == 404
    unknown = source("nope", headers=ok_headers, query={}, client_ip="", body=b"")
    assert isinstance(unknown, Refused) and unknown.status == 404
    refused = source("ds-gateway-http", headers={}, query={}, client_ip="", body=b'{"a": 1}')
    assert isinstance(refused, Refused) and refused.status == 401 and refused.keep
    assert (
        refused.body == b'{"a": 1}'
        and refused.org_id == "factory-alpha"
        and refused.event_tracker_id
    )


def test_accept_partitions_by_the_assets_org(policy: IngressPolicy) -> None:
    source = policy.catalog.data_sources["ds-gateway-http"]
    accepted = policy.accept(source, {"deviceId": "FRZ-0003", "ts": "x"})
    assert isinstance(accepted, Accepted)
    assert (
        accepted.headers[HEADER_ORG] == "alpha-cold-room-2"
        and accepted.headers[HEADER_SOURCE] == source.id
    )
    assert accepted.subject == f"eventray.in.p{partition_of('alpha-cold-room-2', 4)}"
    unbound = policy.accept(source, {"deviceId": "UNKNOWN"})
    assert isinstance(unbound, Refused) and (unbound.status, unbound.error, unbound.stage) == (
        422,
        "no asset with assetUUID 'UNKNOWN'",
        "bind",
    )  # answered now and kept whole, not a 201 and a DLQ row later
    assert unbound.keep and unbound.body == b'{"deviceId":"UNKNOWN"}'
    # a device of another branch of the tree: the data source's organization cannot feed it
    depot = policy.catalog.assets["lora-door-01"]
    other = policy.accept(source, {"end_device_ids": {"dev_eui": depot.asset_uuid}})
    assert isinstance(other, Refused) and other.status == 422
    assert (
        other.error
        == "asset 'lora-door-01' is outside data source 'ds-gateway-http''s organization"
    )
    assert isinstance(policy.accept(source, [1]), Refused)
    too_big = policy.accept(source, {"deviceId": "FRZ-0001", "pad": "x" * 2000})
    assert isinstance(too_big, Refused) and too_big.status == 413


def test_accepted_events_carry_the_config_revision_they_were_accepted_under() -> None:
    from dataclasses import replace

    from eventray.pipeline.ingress import HEADER_REVISION

    catalog = load_catalog([SAMPLES / "tenant"], compile_scripts=False)
    source = catalog.data_sources["ds-gateway-http"]
    for revision, expected in ((0, None), (12, "12")):
        policy = IngressPolicy(
            replace(catalog, revision=revision), partitions=4, subject_prefix="eventray.in",
            max_body_bytes=1000,
        )  # fmt: skip
        accepted = policy.accept(source, {"deviceId": "FRZ-0003"})
        assert isinstance(accepted, Accepted)
        assert accepted.headers.get(HEADER_REVISION) == expected


def test_a_catalog_from_the_config_store_knows_its_revision(tmp_path: Path) -> None:
    from eventray.cluster.stack_cli import read_entity_documents
    from eventray.pipeline.adapters.file_config import FileConfigStore
    from eventray.pipeline.catalog import catalog_from_store

    store = FileConfigStore(root=tmp_path)
    first = store.put(read_entity_documents([SAMPLES / "tenant"]))
    catalog, revision = catalog_from_store(store)
    assert catalog.revision == revision == first > 0
    second = store.put([{"kind": "Organization", "id": "extra", "name": "x", "type": "customer"}])
    assert catalog_from_store(store)[0].revision == second > first


def test_a_disabled_asset_is_answered_422() -> None:
    from dataclasses import replace

    catalog = load_catalog([SAMPLES / "tenant"], compile_scripts=False)
    freezer = catalog.assets["freezer-01"].model_copy(update={"enabled": False})
    catalog = replace(catalog, assets={**catalog.assets, "freezer-01": freezer})
    policy = IngressPolicy(
        catalog, partitions=4, subject_prefix="eventray.in", max_body_bytes=1 << 20
    )
    refused = policy.accept(catalog.data_sources["ds-gateway-http"], {"deviceId": "FRZ-0001"})
    assert isinstance(refused, Refused)
    assert (refused.status, refused.error) == (422, "asset 'freezer-01' is disabled")


def test_oauth2_over_the_in_memory_key_sets() -> None:
    """The oauth2 path without a network: OKP keys (EdDSA and Ed25519), the claims, and the
    503 of a set that cannot be had."""
    import time
    import warnings

    from joserfc import jwt as jose_jwt
    from joserfc.errors import SecurityWarning
    from joserfc.jwk import OKPKey

    from eventray.pipeline.adapters.memory_jwks import MemoryJwks
    from eventray.pipeline.jwks import JwksCache

    url = "https://idp.example/jwks"
    okp = OKPKey.generate_key("Ed25519", parameters={"kid": "o1"})
    fetch = MemoryJwks()
    fetch.serve(url, [okp.as_dict(private=False)])
    keys = JwksCache(fetch)
    auth = OAuth2Auth.model_validate({"jwksUrl": url, "issuer": "https://idp.example"})
    now = int(time.time())
    claims = {"iss": "https://idp.example", "exp": now + 60}

    def token(alg: str, **extra: Any) -> dict[str, str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)
            signed = jose_jwt.encode({"alg": alg, "kid": "o1"}, {**claims, **extra}, okp, [alg])
        return {"authorization": f"Bearer {signed}"}

    def check(headers: dict[str, str], source: OAuth2Auth = auth) -> AuthResult:
        return authenticate(source, headers=headers, query={}, client_ip="", keys=keys)

    assert check(token("EdDSA")).ok and check(token("Ed25519")).ok
    assert check(token("EdDSA", iss="https://other")).reason == (
        "JWT issuer 'https://other' is not 'https://idp.example'"
    )
    assert check({"authorization": "Basic dXNlcjpwdw=="}).reason == (
        "missing bearer token in header Authorization"
    )
    assert fetch.hits[url] == 1
    down = OAuth2Auth.model_validate({"jwksUrl": "https://down.example/jwks"})
    result = check(token("Ed25519"), down)
    assert (result.ok, result.status) == (False, 503)
    assert result.retry_after_s is not None and 9 < result.retry_after_s <= 10
    assert result.reason.startswith("key set at https://down.example/jwks unavailable")
