"""OAuth2 data sources through the real running ingress (aiohttp, real nats-server), against a
loopback identity provider (a JWKS served by aiohttp, RSA and EC keys made with
``cryptography``), fetched by the real aiohttp adapter that the wiring builds.

Accepted: RS256 and ES256 tokens, a token expired within the leeway. Refused (401, with the
reason, kept in events_raw): wrong audience or issuer, expired, not yet valid, a bad signature,
``alg: none``, HS256 keyed with the provider's public key, no ``exp``, no token. Key rotation: a
new kid is accepted after one refetch; a burst of unknown kids costs the provider one request.
The provider down, answering 500, garbage, too much or too slowly: 503 with Retry-After,
nothing kept. A loopback
JWKS URL (an IP literal, or a name resolving there) is refused (401) unless
``ingress.jwks_allow_networks`` allows it, and plain http unless ``ingress.jwks_allow_http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventray.cluster.services.nats_server import RunningNats
from eventray.cluster.wiring import Endpoints, Wiring
from eventray.config.settings import IngressSettings, Settings
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.jwks import JwksCache
from eventray.pipeline.loader import read_entities
from eventray.pipeline.models import DataSource
from eventray.testing.jwks import (
    JwksServer,
    SigningKeyPair,
    claims,
    ec_pair,
    forged,
    rsa_pair,
    unused_port,
)
from tests.integration.test_ingress_http import READING, Harness, harness, nats_server

pytestmark = pytest.mark.services

__all__ = ["nats_server"]  # the fixture, re-used

ISSUER = "https://idp.test"
AUDIENCE = "eventray-ingest"
LOOPBACK = ["127.0.0.1/32"]


def catalog_with(samples_dir: Path, **jwks_urls: str) -> Catalog:
    """The sample tenant plus one oauth2 data source per keyword (id -> JWKS URL), feeding
    factory-alpha's freezers like ds-gateway-http."""
    entities = read_entities([samples_dir / "tenant"], [])
    for source_id, url in jwks_urls.items():
        source = DataSource.model_validate(
            {
                "id": source_id,
                "orgId": "factory-alpha",
                "name": f"OAuth2 {source_id}",
                "auth": {"type": "oauth2", "jwksUrl": url, "issuer": ISSUER, "audience": AUDIENCE},
                "assetBind": {"uuidFields": ["deviceId"]},
            }
        )
        entities.append(("test", source))
    return build_catalog(entities, compile_scripts=False)


def key_sets(**ingress: Any) -> JwksCache:
    """The cache and fetcher as the ingress actor gets them: settings, then the wiring."""
    settings = Settings(ingress=IngressSettings(port=0, **ingress))
    endpoints = Endpoints(
        nats_url="", redis_url="", chdb_path=None, clickhouse_url=None, config_dir=None,
        mongodb_url=None, blob_dir=None,
    )  # fmt: skip
    return settings.ingress.key_sets(Wiring(settings, endpoints).jwks_fetch())


@dataclass
class Idp:
    server: JwksServer
    rsa: SigningKeyPair
    ec: SigningKeyPair


@contextlib.asynccontextmanager
async def provider() -> AsyncIterator[Idp]:
    rsa, ec = rsa_pair("rsa-1"), ec_pair("ec-1")
    server = await JwksServer(keys=[rsa.jwk, ec.jwk]).start()
    try:
        yield Idp(server, rsa, ec)
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def ingress(
    nats: RunningNats, samples_dir: Path, catalog: Catalog, **jwks: Any
) -> AsyncIterator[tuple[Harness, JwksCache]]:
    options = {"jwks_allow_networks": LOOPBACK, "jwks_allow_http": True, **jwks}
    keys = key_sets(**options)
    try:
        async with harness(nats, samples_dir, catalog=catalog, keys=keys) as h:
            yield h, keys
    finally:
        await keys.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def good(**extra: Any) -> dict[str, Any]:
    return claims(**{"iss": ISSUER, "aud": AUDIENCE, **extra})


def test_rs256_and_es256_tokens_are_accepted_and_bad_ones_refused_with_the_reason(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with provider() as idp:
            catalog = catalog_with(samples_dir, **{"ds-oauth": idp.server.url})
            async with ingress(nats_server, samples_dir, catalog) as (h, _):

                async def post(token: str) -> tuple[int, Any]:
                    status, _, body = await h.post(READING, ds="ds-oauth", headers=bearer(token))
                    return status, body

                now = int(time.time())
                for token in (
                    idp.rsa.token(good()),
                    idp.ec.token(good()),
                    idp.rsa.token(good(aud=["other", AUDIENCE])),  # one of several audiences
                    idp.rsa.token(good(exp=now - 10)),  # expired, within the 30 s leeway
                ):
                    status, body = await post(token)
                    assert status == 201, body
                assert idp.server.hits == 1  # one fetch for all of them

                stranger = rsa_pair("rsa-1")  # the provider's kid, another private key
                refusals = {
                    idp.rsa.token(good(aud="other")): (
                        f"JWT audience 'other' does not include '{AUDIENCE}'"
                    ),
                    idp.rsa.token(good(iss="https://evil.test")): (
                        f"JWT issuer 'https://evil.test' is not '{ISSUER}'"
                    ),
                    idp.rsa.token(good(exp=now - 120)): "JWT expired",
                    idp.ec.token(good(nbf=now + 120)): "JWT not valid yet",
                    idp.rsa.token({"iss": ISSUER, "aud": AUDIENCE}): "JWT has no 'exp' claim",
                    stranger.token(good()): "JWT signature does not verify",
                    forged({"alg": "none", "kid": "rsa-1"}, good(), hmac_key=None): (
                        "JWT algorithm 'none' is not allowed (a JWKS verifies RS*, PS*, ES* and "
                        "EdDSA tokens)"
                    ),
                    forged({"alg": "HS256", "kid": "rsa-1"}, good(), hmac_key=idp.rsa.public_pem): (
                        "JWT algorithm 'HS256' is not allowed (a JWKS verifies RS*, PS*, ES* and "
                        "EdDSA tokens)"
                    ),
                    idp.ec.token(good(), kid="rsa-1"): (
                        "JWT algorithm 'ES256' does not fit key 'rsa-1' (RSA: PS256/PS384/PS512/"
                        "RS256/RS384/RS512)"
                    ),
                    "not-a-jwt": "malformed JWT",
                }
                for token, reason in refusals.items():
                    status, body = await post(token)
                    assert (status, body) == (401, {"error": reason}), token
                status, _, body = await h.post(READING, ds="ds-oauth", headers={})
                assert (status, body) == (
                    401, {"error": "missing bearer token in header Authorization"}
                )  # fmt: skip
                kept = [row["reason"] for row in h.kept if row["data_source_id"] == "ds-oauth"]
                assert kept == [*refusals.values(), "missing bearer token in header Authorization"]
                assert idp.server.hits == 1  # none of the refusals asked the provider again

    asyncio.run(scenario())


def test_key_rotation_is_picked_up_by_one_refetch_and_unknown_kids_cannot_hammer_the_provider(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with provider() as idp:
            catalog = catalog_with(samples_dir, **{"ds-oauth": idp.server.url})
            interval = 1.0
            async with ingress(
                nats_server, samples_dir, catalog, jwks_refetch_interval_s=interval
            ) as (h, _):

                async def post(token: str) -> int:
                    return (await h.post(READING, ds="ds-oauth", headers=bearer(token)))[0]

                assert await post(idp.rsa.token(good())) == 201
                assert idp.server.hits == 1
                # a burst of tokens with random kids, right after the fetch: none asks again
                intruder = rsa_pair("x")
                burst = [intruder.token(good(), kid=f"random-{i}") for i in range(40)]
                assert await asyncio.gather(*(post(t) for t in burst)) == [401] * 40
                assert idp.server.hits == 1
                # once the interval has passed, another burst: one refetch, shared
                await asyncio.sleep(interval + 0.1)
                burst = [intruder.token(good(), kid=f"again-{i}") for i in range(40)]
                assert await asyncio.gather(*(post(t) for t in burst)) == [401] * 40
                assert idp.server.hits == 2

                # the provider rotates to a new key; tokens signed with it come in
                rotated = rsa_pair("rsa-2")
                idp.server.keys = [idp.rsa.jwk, rotated.jwk]
                await asyncio.sleep(interval + 0.1)
                assert await post(rotated.token(good())) == 201  # after one refetch
                assert idp.server.hits == 3
                assert await post(rotated.token(good())) == 201
                assert await post(idp.rsa.token(good())) == 201  # the old key still listed
                assert idp.server.hits == 3

    asyncio.run(scenario())


def test_an_unreachable_or_broken_jwks_is_503_with_retry_after(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with provider() as idp:
            down = f"http://127.0.0.1:{unused_port()}/jwks"
            catalog = catalog_with(samples_dir, **{"ds-down": down, "ds-oauth": idp.server.url})
            async with ingress(
                nats_server, samples_dir, catalog, jwks_refetch_interval_s=5, jwks_max_bytes=4096,
                jwks_timeout_s=0.5,
            ) as (h, keys):  # fmt: skip
                token = idp.rsa.token(good())
                status, headers, body = await h.post(READING, ds="ds-down", headers=bearer(token))
                assert status == 503 and headers["Retry-After"] == "5"
                assert body["error"].startswith(f"key set at {down} unavailable: JWKS URL {down}")
                status, headers, _ = await h.post(READING, ds="ds-down", headers=bearer(token))
                assert status == 503 and int(headers["Retry-After"]) in (4, 5)
                assert not [row for row in h.kept if row["data_source_id"] == "ds-down"]
                assert keys.fetches == 1  # the second request did not try again

                for mode, reason in (
                    ("error", "answered HTTP 500"),
                    ("garbage", "not JSON"),
                    ("huge", "answered more than 4096 bytes"),
                    ("slow", "TimeoutError"),
                ):
                    idp.server.mode = mode
                    keys.retain([])  # forget the set: the next request fetches
                    status, headers, body = await h.post(
                        READING, ds="ds-oauth", headers=bearer(token)
                    )
                    assert status == 503 and headers["Retry-After"] == "5", body
                    assert reason in body["error"]
                # the provider is back: served again once the interval allows a fetch
                idp.server.mode = "ok"
                keys.retain([])
                assert (await h.post(READING, ds="ds-oauth", headers=bearer(token)))[0] == 201

    asyncio.run(scenario())


def test_a_loopback_or_plain_http_jwks_is_refused_unless_the_settings_allow_it(
    nats_server: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with provider() as idp:
            catalog = catalog_with(samples_dir, **{"ds-oauth": idp.server.url})
            token = bearer(idp.rsa.token(good()))
            port = idp.server.port
            async with ingress(nats_server, samples_dir, catalog, jwks_allow_networks=[]) as (h, _):
                status, _, body = await h.post(READING, ds="ds-oauth", headers=token)
                assert (status, body) == (401, {"error": (
                    f"JWKS URL 127.0.0.1:{port} resolves to 127.0.0.1, a loopback address; "
                    "allow it with ingress.jwks_allow_networks"
                )})  # fmt: skip
                assert h.kept[-1]["reason"] == body["error"]
            async with ingress(nats_server, samples_dir, catalog, jwks_allow_http=False) as (h, _):
                status, _, body = await h.post(READING, ds="ds-oauth", headers=token)
                assert status == 401 and "plain http" in body["error"], body
            named = catalog_with(samples_dir, **{"ds-oauth": f"http://localhost:{port}/jwks"})
            async with ingress(nats_server, samples_dir, named, jwks_allow_networks=[]) as (h, _):
                status, _, body = await h.post(READING, ds="ds-oauth", headers=token)
                assert status == 401 and body["error"].startswith(f"JWKS URL localhost:{port} "), (
                    body
                )
                assert body["error"].endswith(
                    "a loopback address; allow it with ingress.jwks_allow_networks"
                )  # the name is resolved and the address it resolves to refused
            assert idp.server.hits == 0  # never contacted
            async with ingress(nats_server, samples_dir, catalog) as (h, _):
                assert (await h.post(READING, ds="ds-oauth", headers=token))[0] == 201
            assert idp.server.hits == 1

    asyncio.run(scenario())
