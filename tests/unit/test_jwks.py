"""The JWKS cache (pipeline/jwks.py) over its in-memory twin: TTLs, the refetch of an unknown
kid and its rate limit, one shared fetch for concurrent callers, outages (503 with Retry-After,
stale keys for known kids), refusals; and the parsing of key sets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from eventray.pipeline.adapters.memory_jwks import MemoryJwks
from eventray.pipeline.jwks import (
    JwksCache,
    JwksRefused,
    KeysUnavailable,
    NoKey,
    SigningKey,
    parse_jwks,
    ttl_of,
)

T = TypeVar("T")
URL = "https://idp.example/.well-known/jwks.json"


def b64int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa() -> dict[str, Any]:
    return RSAKey.generate_key(2048, parameters={"kid": "r1"}).as_dict(private=False)


@pytest.fixture(scope="module")
def rsa2() -> dict[str, Any]:
    return RSAKey.generate_key(2048, parameters={"kid": "r2"}).as_dict(private=False)


@pytest.fixture(scope="module")
def ec() -> dict[str, Any]:
    return ECKey.generate_key("P-256", parameters={"kid": "e1"}).as_dict(private=False)


def cache(fetch: MemoryJwks, clock: Clock, **options: Any) -> JwksCache:
    return JwksCache(fetch, clock=clock, **options)


def test_parse_keeps_asymmetric_signing_keys_only(rsa: dict[str, Any], ec: dict[str, Any]) -> None:
    weak = rsa_keys.generate_private_key(65537, 1024).public_key().public_numbers()
    small = {"kty": "RSA", "kid": "small", "n": b64int(weak.n), "e": b64int(weak.e)}
    okp = OKPKey.generate_key("Ed25519", parameters={"kid": "o1"}).as_dict(private=False)
    secret = OctKey.generate_key(256, parameters={"kid": "h1"}).as_dict()
    body = orjson.dumps(
        {
            "keys": [
                rsa,
                ec,
                okp,
                secret,  # oct: a JWKS never makes HMAC acceptable
                small,  # RSA under 2048 bits
                {**ec, "kid": "enc", "use": "enc"},
                {**rsa, "kid": "pinned", "alg": "PS256"},
                {**rsa, "kid": "wrong-alg", "alg": "HS256"},
                {"kty": "RSA", "kid": "broken", "n": "x"},
                {"kty": "PQ", "kid": "future"},
                "not a key",
            ]
        }
    )
    keys = {k.kid: k for k in parse_jwks(body)}
    assert sorted(keys, key=str) == ["e1", "o1", "pinned", "r1"]
    assert keys["r1"].algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert keys["e1"].algorithms == {"ES256"} and keys["e1"].kty == "EC"
    assert keys["o1"].algorithms == {"Ed25519", "EdDSA"}
    assert keys["pinned"].algorithms == {"PS256"}
    for bad in (b"not json", b"[]", b'{"keys": {}}', b'{"other": []}'):
        with pytest.raises(ValueError):
            parse_jwks(bad)
    assert parse_jwks(b'{"keys": []}') == ()


def test_ttl_honours_max_age_within_bounds() -> None:
    bounds = {"default_s": 300.0, "min_s": 30.0, "max_s": 3600.0}
    assert ttl_of(None, **bounds) == 300
    assert ttl_of("public, max-age=600", **bounds) == 600
    assert ttl_of("max-age=5", **bounds) == 30
    assert ttl_of("max-age=999999, must-revalidate", **bounds) == 3600
    assert ttl_of("no-store", **bounds) == 30
    assert ttl_of("private, no-cache", **bounds) == 30
    assert ttl_of("s-maxage=900", **bounds) == 300  # only max-age counts
    assert ttl_of("max-age=garbage", **bounds) == 300


def test_a_set_is_fetched_once_and_kept_for_its_ttl(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa], cache_control="max-age=120")
    keys = cache(fetch, clock)

    async def scenario() -> None:
        for _ in range(5):
            found = await keys.key(URL, "r1", "RS256")
            assert isinstance(found, SigningKey) and found.kid == "r1"
        assert fetch.hits[URL] == 1
        clock.now += 119
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        assert fetch.hits[URL] == 1
        clock.now += 2  # expired: fetched again
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        assert fetch.hits[URL] == 2

    run(scenario())


def test_an_unknown_kid_refetches_at_most_once_per_interval(
    rsa: dict[str, Any], rsa2: dict[str, Any]
) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa])
    keys = cache(fetch, clock, refetch_interval_s=10)

    async def scenario() -> None:
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        clock.now += 10
        # a flood of random kids: one refetch, then refused without asking the provider
        answers = [await keys.key(URL, f"random-{i}", "RS256") for i in range(100)]
        assert all(isinstance(a, NoKey) for a in answers)
        assert answers[0] == NoKey(f"no key 'random-0' in the key set at {URL}")
        assert fetch.hits[URL] == 2
        # the provider rotates: the new kid is unknown until the interval has passed
        fetch.serve(URL, [rsa, rsa2])
        clock.now += 5
        assert isinstance(await keys.key(URL, "r2", "RS256"), NoKey)
        assert fetch.hits[URL] == 2
        clock.now += 5
        found = await keys.key(URL, "r2", "RS256")
        assert isinstance(found, SigningKey) and found.kid == "r2"
        assert fetch.hits[URL] == 3
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)  # both still known
        assert fetch.hits[URL] == 3

    run(scenario())


def test_concurrent_callers_share_one_fetch(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa])
    keys = cache(fetch, clock)

    async def scenario() -> None:
        fetch.gate = asyncio.Event()
        waiting = [asyncio.create_task(keys.key(URL, "r1", "RS256")) for _ in range(50)]
        unknown = [asyncio.create_task(keys.key(URL, f"x{i}", "RS256")) for i in range(50)]
        await asyncio.sleep(0.01)
        assert fetch.hits[URL] == 1 and not any(t.done() for t in waiting)
        fetch.gate.set()
        assert all(isinstance(a, SigningKey) for a in await asyncio.gather(*waiting))
        assert all(isinstance(a, NoKey) for a in await asyncio.gather(*unknown))
        assert fetch.hits[URL] == 1

    run(scenario())


def test_a_caller_cancelled_while_waiting_does_not_cancel_the_shared_fetch(
    rsa: dict[str, Any],
) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa])
    keys = cache(fetch, clock)

    async def scenario() -> None:
        fetch.gate = asyncio.Event()
        first = asyncio.create_task(keys.key(URL, "r1", "RS256"))
        second = asyncio.create_task(keys.key(URL, "r1", "RS256"))
        await asyncio.sleep(0.01)
        first.cancel()
        fetch.gate.set()
        assert isinstance(await second, SigningKey)
        assert first.cancelled() and fetch.hits[URL] == 1

    run(scenario())


def test_an_outage_is_503_with_retry_after_and_is_not_hammered(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    keys = cache(fetch, clock, refetch_interval_s=10)

    async def scenario() -> None:
        first = await keys.key(URL, "r1", "RS256")
        assert isinstance(first, KeysUnavailable)
        assert first.reason == f"key set at {URL} unavailable: {URL}: connection refused"
        assert first.retry_after_s == 10
        clock.now += 4
        again = [await keys.key(URL, "r1", "RS256") for _ in range(20)]
        assert all(isinstance(a, KeysUnavailable) and a.retry_after_s == 6 for a in again)
        assert fetch.hits[URL] == 1
        fetch.serve(URL, [rsa])  # back up
        clock.now += 6
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        assert fetch.hits[URL] == 2 and keys.failures == 1

    run(scenario())


def test_a_broken_document_is_an_outage(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, b"<html>maintenance</html>")
    keys = cache(fetch, clock)
    found = run(keys.key(URL, "r1", "RS256"))
    assert isinstance(found, KeysUnavailable) and "not JSON" in found.reason


def test_stale_keys_serve_known_kids_during_an_outage_for_stale_s(
    rsa: dict[str, Any], rsa2: dict[str, Any]
) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa], cache_control="max-age=60")
    keys = cache(fetch, clock, refetch_interval_s=10, stale_s=600)

    async def scenario() -> None:
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        fetch.fail(URL)
        clock.now += 61  # expired; the refetch fails
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)  # known kid: stale
        unknown = await keys.key(URL, "r2", "RS256")  # maybe a rotated key: cannot tell
        assert isinstance(unknown, KeysUnavailable)
        assert keys.stale_answers == 1 and fetch.hits[URL] == 2
        clock.now += 600  # past expiry + stale_s
        late = await keys.key(URL, "r1", "RS256")
        assert isinstance(late, KeysUnavailable)
        assert fetch.hits[URL] == 3

    run(scenario())


def test_a_failed_refetch_for_an_unknown_kid_is_503_not_401(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa])
    keys = cache(fetch, clock, refetch_interval_s=10)

    async def scenario() -> None:
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        fetch.fail(URL)
        clock.now += 10
        assert isinstance(await keys.key(URL, "new", "RS256"), KeysUnavailable)
        clock.now += 1  # within the interval: still cannot tell, still 503
        assert isinstance(await keys.key(URL, "new", "RS256"), KeysUnavailable)
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)  # the set is fresh
        assert fetch.hits[URL] == 2

    run(scenario())


def test_a_refused_url_is_401_without_stale_keys(rsa: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa], cache_control="max-age=60")
    keys = cache(fetch, clock, refetch_interval_s=10)

    async def scenario() -> None:
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        reason = "JWKS URL idp.example:443 resolves to 10.0.0.5, a private address"
        fetch.fail(URL, JwksRefused(reason))
        clock.now += 61
        assert await keys.key(URL, "r1", "RS256") == NoKey(reason)
        assert fetch.hits[URL] == 2
        assert await keys.key(URL, "r1", "RS256") == NoKey(reason)  # not asked again yet
        assert fetch.hits[URL] == 2

    run(scenario())


def test_key_selection_by_kid_and_algorithm(rsa: dict[str, Any], ec: dict[str, Any]) -> None:
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa, ec])
    keys = cache(fetch, clock)

    async def scenario() -> None:
        es = await keys.key(URL, "e1", "ES256")
        assert isinstance(es, SigningKey) and es.kty == "EC"
        assert await keys.key(URL, "e1", "RS256") == NoKey(
            "JWT algorithm 'RS256' does not fit key 'e1' (EC: ES256)"
        )
        assert isinstance(await keys.key(URL, "r1", "PS512"), SigningKey)
        # no kid: the one key that takes the algorithm
        anonymous = await keys.key(URL, None, "ES256")
        assert isinstance(anonymous, SigningKey) and anonymous.kid == "e1"
        assert fetch.hits[URL] == 1

    run(scenario())
    fetch.serve(URL, [rsa, {**rsa, "kid": "r1-copy"}])
    two = cache(fetch, clock)
    assert run(two.key(URL, None, "RS256")) == NoKey(
        "JWT has no kid and 2 keys of the set take RS256"
    )


def test_urls_are_cached_separately_and_forgotten_when_no_data_source_names_them(
    rsa: dict[str, Any], ec: dict[str, Any]
) -> None:
    other = "https://other.example/jwks"
    fetch, clock = MemoryJwks(), Clock()
    fetch.serve(URL, [rsa])
    fetch.serve(other, [ec])
    keys = cache(fetch, clock)

    async def scenario() -> None:
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        assert isinstance(await keys.key(other, "r1", "RS256"), NoKey)  # not in that set
        keys.retain([other])
        assert isinstance(await keys.key(URL, "r1", "RS256"), SigningKey)
        assert fetch.hits == {URL: 2, other: 1}
        await keys.close()
        assert fetch.closed

    run(scenario())
