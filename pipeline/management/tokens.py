"""Management API tokens: made, checked, listed and revoked.

A token is ``ert_`` followed by 32 random bytes (256 bits) in URL-safe base64. It is shown once,
when it is made; the store keeps only its SHA-256.

Why a plain SHA-256 and not bcrypt/scrypt/argon2: a slow, salted hash protects *guessable*
secrets (passwords) from a dictionary attack on a stolen hash file. A token drawn from 2^256
values cannot be guessed or enumerated, so a stolen hash reveals nothing that brute force could
use, slowness adds no protection, and a salt adds none (no two tokens collide, and there is no
precomputed table of random 256-bit strings). What a fast, unsalted hash buys is the lookup:
the presented token's hash is the key of its record, found in one step on every request,
instead of a slow hash per request (bcrypt at cost 10 is ~50 ms of CPU) compared against every
stored token in turn. This is the reasoning of GitHub's and PyPI's token schemes. The prefix
``ert_`` lets secret scanners recognise a leaked token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from eventray.pipeline.clock import SystemClock
from eventray.pipeline.management.errors import Invalid, NotFound, Unauthorized
from eventray.pipeline.management.scope import ROLES, Principal, Scope
from eventray.pipeline.ports import Clock, TokenRecord, TokenStore

__all__ = [
    "PREFIX",
    "IssuedToken",
    "TokenService",
    "hash_token",
    "record_from_json",
    "record_to_json",
    "revoked_copy",
    "token_view",
]

PREFIX: Final = "ert_"


def hash_token(token: str) -> str:
    """The hex SHA-256 a token is stored and found by (see the module's docstring)."""
    return hashlib.sha256(token.encode()).hexdigest()


def record_to_json(record: TokenRecord) -> dict[str, Any]:
    """A stored token as a JSON object (how the file store and MongoDB keep it)."""
    return {
        "id": record.id,
        "name": record.name,
        "orgId": record.org_id,
        "role": record.role,
        "tokenHash": record.token_hash,
        "created": record.created.isoformat(),
        "expires": record.expires.isoformat() if record.expires else None,
        "revoked": record.revoked.isoformat() if record.revoked else None,
        "createdBy": record.created_by,
    }


def record_from_json(data: Mapping[str, Any]) -> TokenRecord:
    """The inverse of :func:`record_to_json`."""

    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(str(value)) if value else None

    created = when(data["created"])
    assert created is not None
    return TokenRecord(
        id=str(data["id"]), name=str(data["name"]), org_id=str(data["orgId"]),
        role=str(data["role"]), token_hash=str(data["tokenHash"]), created=created,
        expires=when(data.get("expires")), revoked=when(data.get("revoked")),
        created_by=str(data.get("createdBy", "")),
    )  # fmt: skip


def token_view(record: TokenRecord, now: datetime) -> dict[str, Any]:
    """What the API shows of a token: everything but its hash, and whether it still works."""
    out = record_to_json(record)
    del out["tokenHash"]
    out["active"] = record.revoked is None and (record.expires is None or record.expires > now)
    return out


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just made: the only time its secret is known."""

    token: str
    record: TokenRecord


class TokenService:
    """Tokens over a :class:`TokenStore`.

    Scope checks need the configuration (an organization's pathKey): the caller passes the
    :class:`Scope` it resolved for the principal (``EntityService.scope``).

    Args:
        store: where tokens are kept.
        clock: what "now" is for creation, expiry and revocation.
    """

    def __init__(self, store: TokenStore, *, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()

    def authenticate(self, token: str | None) -> Principal:
        """The principal a presented token stands for.

        Raises:
            Unauthorized: no token, an unknown one, or one expired or revoked (each says so:
                the caller holds the token, so the reason tells them nothing new).
        """
        if not token:
            raise Unauthorized("no API token: send Authorization: Bearer <token>")
        record = self.store.find(hash_token(token.strip()))
        if record is None:
            raise Unauthorized("unknown API token")
        if record.revoked is not None:
            raise Unauthorized("API token revoked")
        if record.expires is not None and record.expires <= self.clock.now():
            raise Unauthorized("API token expired")
        if record.role not in ROLES:
            raise Unauthorized(f"API token has an unknown role {record.role!r}")
        return Principal(record.id, record.name, record.org_id, record.role)

    def create(
        self,
        scope: Scope,
        *,
        org_id: str,
        role: str,
        name: str = "",
        expires_days: float | None = None,
    ) -> IssuedToken:
        """Make a token for ``org_id`` (in ``scope``) with ``role``; its secret is returned
        once and never stored.

        Raises:
            Forbidden: the principal is not an admin.
            NotFound: ``org_id`` is unknown or outside the scope.
            Invalid: an unknown role or a non-positive lifetime.
        """
        scope.principal.require("admin")
        if role not in ROLES:
            raise Invalid(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", "role")
        if expires_days is not None and expires_days <= 0:
            raise Invalid("expiresDays must be positive", "expiresDays")
        if org_id not in scope.org_paths or not scope.covers_org(org_id):
            raise NotFound(f"unknown organization {org_id!r}")
        now = self.clock.now()
        token = PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id=secrets.token_hex(6), name=name or f"{role}@{org_id}", org_id=org_id, role=role,
            token_hash=hash_token(token), created=now,
            expires=now + timedelta(days=expires_days) if expires_days is not None else None,
            created_by=scope.principal.token_id,
        )  # fmt: skip
        self.store.add(record)
        return IssuedToken(token, record)

    def list_tokens(self, scope: Scope) -> list[TokenRecord]:
        """The tokens of organizations in the scope, oldest first (admins only).

        Raises:
            Forbidden: the principal is not an admin.
        """
        scope.principal.require("admin")
        return [r for r in self.store.all() if self._visible(scope, r)]

    def get(self, scope: Scope, token_id: str) -> TokenRecord:
        """One token of the scope (admins only).

        Raises:
            Forbidden: the principal is not an admin.
            NotFound: no such token in the scope.
        """
        scope.principal.require("admin")
        record = self.store.get(token_id)
        if record is None or not self._visible(scope, record):
            raise NotFound(f"unknown token {token_id!r}")
        return record

    def revoke(self, scope: Scope, token_id: str) -> TokenRecord:
        """Revoke a token of the scope (admins only); it fails at its next request.

        Raises:
            Forbidden: the principal is not an admin.
            NotFound: no such token in the scope.
        """
        self.get(scope, token_id)
        revoked = self.store.revoke(token_id, self.clock.now())
        if revoked is None:
            raise NotFound(f"unknown token {token_id!r}")
        return revoked

    @staticmethod
    def _visible(scope: Scope, record: TokenRecord) -> bool:
        # A token of a deleted organization stays visible to the local admin only.
        return scope.path_key is None or (
            record.org_id in scope.org_paths and scope.covers_org(record.org_id)
        )


def revoked_copy(record: TokenRecord, at: datetime) -> TokenRecord:
    """``record`` revoked at ``at``, unless it was revoked before (the first time stays)."""
    return record if record.revoked is not None else replace(record, revoked=at)
