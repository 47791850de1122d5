"""Data-source authentication: API key, JWT (HS256/HS512), OAuth2 bearer tokens (JWKS),
eventray ingest tokens, IP allowlist, none.

Functions over what an HTTP request carries, so the ingress actor stays a thin shell. Secrets
are compared in constant time. Tokens are verified with joserfc: the JWS signature with the
algorithm the data source allows (``jwt``: its shared secret and ``algorithms``; ``oauth2``: a
key of its JWKS, by ``kid``, with the algorithms that key's type supports, never ``none`` or
``HS*``), then the claims: ``exp``, ``nbf`` and ``iat`` with ``leeway_s`` of clock skew, and for
``oauth2`` a required ``exp`` and, when the data source names them, ``iss`` and ``aud``.

A refusal is a 401 with its reason; an OAuth2 token whose key set cannot be fetched now is a
503 with the seconds after which to retry (:attr:`AuthResult.status`), not the client's fault.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import Key, OctKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from eventray.pipeline.ingest_tokens import IngestTokens
from eventray.pipeline.jwks import ASYMMETRIC_ALGORITHMS, JwksCache, KeysUnavailable, NoKey
from eventray.pipeline.models.datasource import (
    ApiKeyAuth,
    ApiTokenAuth,
    Auth,
    IpAllowlistAuth,
    JwtAuth,
    NoAuth,
    OAuth2Auth,
)

__all__ = ["AuthResult", "authenticate"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Whether a request may proceed; when not, the status to answer (401, or 503 when the
    keys to check it could not be had) with the reason, and for a 503 when to retry."""

    ok: bool
    reason: str = ""
    status: int = 401
    retry_after_s: float | None = None


_REFUSED = AuthResult(False)

# One registry per algorithm: it allows exactly that one, and tolerates header parameters it
# does not know (RFC 7515 lets a token carry any; ``crit`` ones are still checked).
_REGISTRIES = {
    alg: JWSRegistry(algorithms=[alg], strict_check_header=False)
    for alg in (*sorted(ASYMMETRIC_ALGORITHMS), "HS256", "HS512")
}


def _bytes(text: str) -> bytes:
    """A header or query value as the client sent it: aiohttp decodes bytes that are not UTF-8
    as surrogate escapes, which a plain ``encode()`` refuses (a 500 from input alone)."""
    return text.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=1024)
def _secret_key(secret: str) -> OctKey | None:
    """The HMAC key of a ``jwt`` data source's secret (``None``: not usable as one). Short
    secrets are the tenant's choice, as before: joserfc's warning about them is not raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        try:
            return OctKey.import_key(secret)
        except ValueError:  # empty, or an asymmetric public key (PEM)
            return None


@contextlib.contextmanager
def _quiet(alg: str) -> Iterator[None]:
    """joserfc warns on every use of ``EdDSA`` (deprecated by RFC 9864, still widely issued)."""
    if alg != "EdDSA":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield


def _extract(token: str) -> CompactSignature | None:
    try:
        signed = extract_compact(_bytes(token))
        header = signed.headers()
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return signed if isinstance(header, dict) else None


def _verified(signed: CompactSignature, key: Key, alg: str) -> dict[str, Any] | str:
    """The claims, once the signature verifies with ``key`` and ``alg``; else why not."""
    try:
        with _quiet(alg):
            good = validate_compact(signed, key, registry=_REGISTRIES[alg])
    except JoseError as exc:
        return f"JWT refused: {exc.description or exc.error}"
    if not good:
        return "JWT signature does not verify"
    try:
        claims = orjson.loads(signed.payload or b"")
    except orjson.JSONDecodeError:
        return "malformed JWT"
    if not isinstance(claims, dict):
        return "JWT claims are not an object"
    return claims


def _claims_refusal(
    claims: dict[str, Any],
    *,
    now: float,
    leeway_s: float,
    require_exp: bool = False,
    issuer: str | None = None,
    audience: str | None = None,
) -> str | None:
    options: dict[str, ClaimsOption] = {}
    if require_exp:
        options["exp"] = {"essential": True}
    if issuer is not None:
        options["iss"] = {"essential": True, "value": issuer}
    if audience is not None:
        options["aud"] = {"essential": True, "value": audience}
    registry = JWTClaimsRegistry(now=int(now), leeway=int(leeway_s), **options)
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        return "JWT expired"
    except MissingClaimError as exc:
        names = " and ".join(repr(c) for c in exc.claim.split(","))
        return f"JWT has no {names} claim"
    except ClaimError as exc:
        if exc.claim == "nbf" and "not yet valid" in str(exc.description):
            return "JWT not valid yet"
        if exc.claim == "iat" and "future" in str(exc.description):
            return "JWT issued in the future"
        if exc.claim == "iss" and issuer is not None:
            return f"JWT issuer {claims.get('iss')!r} is not {issuer!r}"
        if exc.claim == "aud" and audience is not None:
            return f"JWT audience {claims.get('aud')!r} does not include {audience!r}"
        return f"JWT claim {exc.claim!r} is invalid: {exc.description}"
    return None


def _jwt(auth: JwtAuth, headers: Mapping[str, str], now: float, leeway_s: float) -> AuthResult:
    raw = headers.get(auth.header.lower(), "")
    token = raw[7:] if raw.lower().startswith("bearer ") else raw
    if not token:
        return AuthResult(False, f"missing JWT in header {auth.header}")
    signed = _extract(token)
    if signed is None:
        return AuthResult(False, "malformed JWT")
    algorithm = signed.headers().get("alg")
    if algorithm not in auth.algorithms:
        return AuthResult(False, f"JWT algorithm {algorithm!r} is not allowed")
    key = _secret_key(auth.secret)
    if key is None:
        return AuthResult(False, "the data source's JWT secret is not usable as an HMAC key")
    claims = _verified(signed, key, algorithm)
    if isinstance(claims, str):
        return AuthResult(False, claims)
    refusal = _claims_refusal(claims, now=now, leeway_s=leeway_s)
    return AuthResult(False, refusal) if refusal else AuthResult(True)


async def _oauth2(
    auth: OAuth2Auth,
    headers: Mapping[str, str],
    keys: JwksCache | None,
    now: float,
    leeway_s: float,
) -> AuthResult:
    raw = headers.get("authorization", "")
    token = raw[7:].strip() if raw.lower().startswith("bearer ") else ""
    if not token:
        return AuthResult(False, "missing bearer token in header Authorization")
    signed = _extract(token)
    if signed is None:
        return AuthResult(False, "malformed JWT")
    header = signed.headers()
    algorithm, kid = header.get("alg"), header.get("kid")
    if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
        return AuthResult(
            False,
            f"JWT algorithm {algorithm!r} is not allowed (a JWKS verifies RS*, PS*, ES* and "
            f"EdDSA tokens)",
        )
    if kid is not None and not isinstance(kid, str):
        return AuthResult(False, "malformed JWT (kid is not a string)")
    if keys is None:
        return AuthResult(False, "oauth2 is not configured on this ingress (no key sets)")
    found = await keys.key(auth.jwks_url, kid, algorithm)
    if isinstance(found, KeysUnavailable):
        return AuthResult(False, found.reason, 503, found.retry_after_s)
    if isinstance(found, NoKey):
        return AuthResult(False, found.reason)
    claims = _verified(signed, found.key, algorithm)
    if isinstance(claims, str):
        return AuthResult(False, claims)
    refusal = _claims_refusal(
        claims,
        now=now,
        leeway_s=leeway_s,
        require_exp=True,
        issuer=auth.issuer,
        audience=auth.audience,
    )
    return AuthResult(False, refusal) if refusal else AuthResult(True)


async def _api_token(
    headers: Mapping[str, str],
    tokens: IngestTokens | None,
    org_id: str,
    org_paths: Mapping[str, str],
) -> AuthResult:
    raw = headers.get("authorization", "")
    token = raw[7:].strip() if raw.lower().startswith("bearer ") else ""
    if not token:
        return AuthResult(False, "missing bearer token in header Authorization")
    if tokens is None:
        return AuthResult(False, "apiToken is not configured on this ingress (no token store)")
    refusal = await tokens.refusal(token, org_id=org_id, org_paths=org_paths)
    return AuthResult(False, refusal) if refusal else AuthResult(True)


async def authenticate(
    auth: Auth,
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    client_ip: str,
    keys: JwksCache | None = None,
    tokens: IngestTokens | None = None,
    org_id: str = "",
    org_paths: Mapping[str, str] | None = None,
    now: float | None = None,
    leeway_s: float = 0.0,
) -> AuthResult:
    """Check one request against a data source's auth. ``headers`` keys are lower-case.

    Args:
        keys: the key sets of ``oauth2`` data sources (without it they are refused).
        tokens: the API tokens of ``apiToken`` data sources (without it they are refused).
        org_id: the data source's organization (for ``apiToken``).
        org_paths: every organization's pathKey (for ``apiToken``).
        now: the time tokens are checked at (epoch seconds; default now).
        leeway_s: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    """
    if isinstance(auth, NoAuth):
        return AuthResult(True)
    if isinstance(auth, ApiKeyAuth):
        given = headers.get(auth.name.lower()) if auth.in_ == "header" else query.get(auth.name)
        if not given:
            return AuthResult(False, f"missing API key in {auth.in_} {auth.name}")
        if not hmac.compare_digest(_bytes(given), auth.key.encode()):
            return AuthResult(False, "invalid API key")
        return AuthResult(True)
    at = time.time() if now is None else now
    if isinstance(auth, JwtAuth):
        return _jwt(auth, headers, at, leeway_s)
    if isinstance(auth, OAuth2Auth):
        return await _oauth2(auth, headers, keys, at, leeway_s)
    if isinstance(auth, ApiTokenAuth):
        return await _api_token(headers, tokens, org_id, org_paths or {})
    if isinstance(auth, IpAllowlistAuth):
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return AuthResult(False, f"client address {client_ip!r} is not an IP")
        if any(address in ipaddress.ip_network(cidr, strict=False) for cidr in auth.cidrs):
            return AuthResult(True)
        return AuthResult(False, f"client address {client_ip} is not in the allowlist")
    return _REFUSED
