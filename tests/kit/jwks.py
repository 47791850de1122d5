"""A loopback identity provider for OAuth2 tests: signing keys made with ``cryptography``, a
JWKS served by aiohttp on a free port (in the test's own event loop), and signed tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

__all__ = [
    "JwksServer",
    "SigningKeyPair",
    "claims",
    "ec_pair",
    "forged",
    "rsa_pair",
    "unused_port",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKeyPair:
    """A private key that signs tokens and the public JWK a provider publishes for it."""

    kid: str
    alg: str
    private: RSAKey | ECKey = field(repr=False)

    @property
    def jwk(self) -> dict[str, Any]:
        return {**self.private.as_dict(private=False), "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.as_pem(private=False)

    def token(self, claims: dict[str, Any], **header: Any) -> str:
        """A JWT of ``claims`` signed with this key (``header`` overrides ``kid``, adds more)."""
        head = {"alg": self.alg, "kid": self.kid, **header}
        return jwt.encode(head, claims, self.private, algorithms=[self.alg])


def rsa_pair(kid: str, alg: str = "RS256") -> SigningKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKeyPair(kid, alg, RSAKey.import_key(key))


def ec_pair(kid: str) -> SigningKeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    return SigningKeyPair(kid, "ES256", ECKey.import_key(key))


def forged(header: dict[str, Any], claims: dict[str, Any], *, hmac_key: bytes | None) -> str:
    """A token signed by hand: with ``hmac_key`` an HS256 MAC (e.g. keyed with a provider's
    *public* key, the classic confusion attack), without it an empty signature (``alg: none``)."""
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
    if hmac_key is None:
        return signing_input + "."
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def claims(**extra: Any) -> dict[str, Any]:
    """Claims valid for a minute from now, overridable."""
    now = int(time.time())
    return {"sub": "gateway-7", "iat": now, "exp": now + 60, **extra}


@dataclass
class JwksServer:
    """Serves ``keys`` as a JWKS at ``/jwks`` on 127.0.0.1 and counts the requests.

    ``mode``: ``"ok"``, ``"error"`` (HTTP 500), ``"garbage"`` (200 with a body that is not
    JSON), ``"huge"`` (a valid but oversized document), ``"slow"`` (answers after ``slow_s``).
    """

    keys: list[dict[str, Any]] = field(default_factory=list)
    cache_control: str | None = None
    mode: str = "ok"
    slow_s: float = 2.0
    hits: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "error":
            return web.Response(status=500, text="internal error")
        if self.mode == "garbage":
            return web.Response(status=200, text="<html>maintenance</html>")
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        keys = self.keys
        if self.mode == "huge":
            keys = keys + [{"kty": "oct", "k": "A" * 1024, "kid": f"pad{i}"} for i in range(400)]
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return web.Response(
            body=orjson.dumps({"keys": keys}), content_type="application/json", headers=headers
        )

    async def start(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
