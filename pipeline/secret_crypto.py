"""Sealing secrets for the encrypted store: AES-256-GCM with the operator's key.

Each secret is sealed on its own, as ``v1:<key id>:<base64url(nonce || ciphertext || tag)>``
with a fresh 96-bit random nonce, and with its organization, name and ``shared`` flag as
associated data: the tag covers them, so a sealed value copied to another organization or
name, or a private secret marked ``shared`` by someone who can write the store but has no key,
no longer opens (:class:`SecretTampered`). Only the value is secret; the organization, name,
flag and times stay readable, which is what the API lists without the key.

The key id is the first 8 hex digits of a SHA-256 of the key (a label, not a secret: 32 bits of
a hash of a 256-bit key tell nothing about it). It says which key sealed an entry, so a store
sealed under another key is refused with that reason (:class:`SecretKeyMismatch`), not taken
for tampering, and a key rotation can open entries with the previous key while it re-seals
them with the current one (``eventray secrets rotate-key``).

Random nonces under one key stay safe for far more secrets than a store holds (the usual
bound is 2^32 encryptions per key); every write seals anew.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventray.pipeline.errors import PermanentError

__all__ = [
    "KEY_BYTES",
    "SecretCipher",
    "SecretKeyMismatch",
    "SecretSealError",
    "SecretTampered",
    "generate_key",
    "key_id",
    "parse_key",
]

KEY_BYTES: Final = 32
_VERSION: Final = "v1"
_NONCE_BYTES: Final = 12


class SecretSealError(PermanentError):
    """A stored secret cannot be opened (base of the two reasons below)."""


class SecretKeyMismatch(SecretSealError):
    """The entry was sealed with a key that is not configured (wrong key, or a rotation whose
    previous key is no longer given)."""


class SecretTampered(SecretSealError):
    """The entry does not authenticate under its key: altered, or moved to another
    organization, name or ``shared`` flag."""


def parse_key(text: str, what: str = "the secrets key") -> bytes:
    """The 32 bytes of a base64 (standard or URL-safe) key.

    Raises:
        ValueError: not base64, or not 32 bytes once decoded (the message never holds the
            text).
    """
    cleaned = "".join(text.split())
    try:
        # altchars "-_" reads URL-safe keys; "+" and "/" still read as themselves
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_",
                               validate=True)  # fmt: skip
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{what} is not base64 (make one with: eventray secrets generate-key, or "
            "openssl rand -base64 32)"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"{what} must be {KEY_BYTES} bytes (AES-256), not {len(raw)}: make one with "
            "eventray secrets generate-key, or openssl rand -base64 32"
        )
    return raw


def generate_key() -> str:
    """A new random key, base64."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    """The label of ``key`` (see the module's docstring)."""
    return hashlib.sha256(b"eventray secrets key id\0" + key).hexdigest()[:8]


def _associated(org_id: str, name: str, shared: bool) -> bytes:
    # JSON, so no organization id or name can be read as another pair.
    return orjson.dumps([_VERSION, org_id, name, shared])


class SecretCipher:
    """Seals with the current key; opens with it or with a previous one.

    Args:
        key: the current key (32 bytes).
        previous: keys entries may still be sealed with (a rotation in progress).
    """

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        for k in (key, *previous):
            if len(k) != KEY_BYTES:
                raise ValueError(f"a secrets key must be {KEY_BYTES} bytes, not {len(k)}")
        self.key_id = key_id(key)
        self._current = AESGCM(key)
        self._keys = {key_id(k): AESGCM(k) for k in (*previous, key)}

    def __repr__(self) -> str:  # never the key
        return f"SecretCipher(key_id={self.key_id!r}, keys={sorted(self._keys)!r})"

    @property
    def key_ids(self) -> list[str]:
        """Every configured key's id (the current one first)."""
        return [self.key_id, *sorted(k for k in self._keys if k != self.key_id)]

    def seal(self, org_id: str, name: str, shared: bool, value: str) -> str:
        """``value`` sealed for ``org_id``/``name`` with the current key."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.encrypt(nonce, value.encode(), _associated(org_id, name, shared))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}:{self.key_id}:{body}"

    @staticmethod
    def sealed_key_id(sealed: str) -> str:
        """The id of the key that sealed ``sealed`` ("" if it is not a sealed value)."""
        parts = sealed.split(":")
        return parts[1] if len(parts) == 3 and parts[0] == _VERSION else ""

    def open(self, org_id: str, name: str, shared: bool, sealed: str) -> str:
        """The value sealed for ``org_id``/``name``.

        Raises:
            SecretKeyMismatch: sealed with a key that is not configured.
            SecretTampered: altered, or not sealed for this organization, name and flag.
        """
        where = f"secret {name!r} of organization {org_id!r}"
        parts = sealed.split(":")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise SecretTampered(f"{where} is not a sealed value this version can read")
        kid, body = parts[1], parts[2]
        cipher = self._keys.get(kid)
        if cipher is None:
            raise SecretKeyMismatch(
                f"{where} was sealed with key {kid}, which is not configured (this process "
                f"has {', '.join(self.key_ids)}): the key is wrong, or a rotation's previous "
                "key must still be given (EVENTRAY_SECRETS__PREVIOUS_KEY) until "
                "'eventray secrets rotate-key' has re-sealed the store"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if len(raw) < _NONCE_BYTES + 16:
                raise ValueError("too short")
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                   _associated(org_id, name, shared))  # fmt: skip
            return plain.decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
            raise SecretTampered(
                f"{where} does not authenticate under key {kid}: the stored entry was "
                "altered, or copied from another organization, name or shared flag"
            ) from None
