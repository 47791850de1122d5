"""Data-source authentication: API key, JWT (HS256/HS512), IP allowlist, none.

Pure functions over what an HTTP request carries, so the ingress actor stays a thin shell.
Comparisons of secrets are constant-time. OAuth2/JWKS needs RSA signature verification and a
fetch of the key set; it is refused with a clear reason until it is implemented.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from eventray.pipeline.models.datasource import (
    ApiKeyAuth,
    Auth,
    IpAllowlistAuth,
    JwtAuth,
    NoAuth,
)

__all__ = ["AuthResult", "authenticate"]

_HASHES = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    reason: str = ""


def _bytes(text: str) -> bytes:
    """A header or query value as the client sent it: aiohttp decodes bytes that are not UTF-8
    as surrogate escapes, which a plain ``encode()`` refuses (a 500 from input alone)."""
    return text.encode("utf-8", "surrogateescape")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt(auth: JwtAuth, headers: Mapping[str, str], now: float) -> AuthResult:
    raw = headers.get(auth.header.lower(), "")
    token = raw[7:] if raw.lower().startswith("bearer ") else raw
    if not token:
        return AuthResult(False, f"missing JWT in header {auth.header}")
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = orjson.loads(_b64url(head_b64))
        claims = orjson.loads(_b64url(body_b64))
        signature = _b64url(sig_b64)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return AuthResult(False, "malformed JWT")
    algorithm = header.get("alg") if isinstance(header, dict) else None
    if algorithm not in auth.algorithms:
        return AuthResult(False, f"JWT algorithm {algorithm!r} is not allowed")
    expected = hmac.new(
        auth.secret.encode(), _bytes(f"{head_b64}.{body_b64}"), _HASHES[algorithm]
    ).digest()
    if not hmac.compare_digest(expected, signature):
        return AuthResult(False, "JWT signature does not verify")
    if not isinstance(claims, dict):
        return AuthResult(False, "JWT claims are not an object")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, (int, float)) and now >= exp:
        return AuthResult(False, "JWT expired")
    if isinstance(nbf, (int, float)) and now < nbf:
        return AuthResult(False, "JWT not valid yet")
    return AuthResult(True)


def authenticate(
    auth: Auth,
    *,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    client_ip: str,
    now: float | None = None,
) -> AuthResult:
    """Check one request against a data source's auth. ``headers`` keys are lower-case."""
    if isinstance(auth, NoAuth):
        return AuthResult(True)
    if isinstance(auth, ApiKeyAuth):
        given = headers.get(auth.name.lower()) if auth.in_ == "header" else query.get(auth.name)
        if not given:
            return AuthResult(False, f"missing API key in {auth.in_} {auth.name}")
        if not hmac.compare_digest(_bytes(given), auth.key.encode()):
            return AuthResult(False, "invalid API key")
        return AuthResult(True)
    if isinstance(auth, JwtAuth):
        return _jwt(auth, headers, time.time() if now is None else now)
    if isinstance(auth, IpAllowlistAuth):
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return AuthResult(False, f"client address {client_ip!r} is not an IP")
        if any(address in ipaddress.ip_network(cidr, strict=False) for cidr in auth.cidrs):
            return AuthResult(True)
        return AuthResult(False, f"client address {client_ip} is not in the allowlist")
    return AuthResult(False, "oauth2 (JWKS) authentication is not implemented yet")
