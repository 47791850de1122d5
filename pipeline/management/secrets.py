"""Secrets through the management API: written, never read back.

A secret is set (created or replaced: a rotation), deleted, and listed by organization, name,
``shared`` flag and when and by whom it was last set; its value is sealed here, with the
operator's key, before the store sees it, and nothing this service returns, raises or logs
holds a value. The running lanes pick up a change within ``secrets.check_interval_s`` (they
follow the store's revision), with no restart and no config notice.

Roles and scope, as for entities: a viewer lists the secrets of its subtree and their changes
(names, not values); an editor or admin also sets and deletes them (as they may edit the
credentials inside a trigger). An organization outside the token's subtree is "unknown", like
one that does not exist; an ancestor's shared secrets are used by a subtree's triggers but not
listed to its tokens (ancestors are outside the scope).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

from eventray.pipeline.clock import SystemClock
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.management.errors import Forbidden, Invalid, NotFound
from eventray.pipeline.management.scope import Scope
from eventray.pipeline.ports import Clock
from eventray.pipeline.secret_crypto import SecretCipher
from eventray.pipeline.secret_store import (
    SealedSecret,
    SecretStore,
    change_to_json,
    rekeyed,
)

__all__ = [
    "MAX_VALUE_BYTES",
    "SecretHolders",
    "SecretService",
    "SecretWritten",
    "SecretsNotConfigured",
    "secret_view",
]

MAX_VALUE_BYTES: Final = 64 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NAME: Final = 128

log = logging.getLogger(__name__)


class SecretsNotConfigured(PermanentError):
    """The operator gave no key, so nothing can be sealed (the API answers 503)."""


class SecretHolders:
    """An organization's secrets as holders of it (``EntityService(holders=...)``): deleting
    an organization that still has secrets is refused (409) naming them, as a trigger still
    in use is; otherwise an organization created later with the same id would inherit
    values it was never given. Delete the secrets first (``eventray secrets delete``)."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    def __call__(self, kind: str, entity_id: str) -> list[tuple[str, str, str]]:
        if kind != "Organization":
            return []
        return [("Secret", s.name, "orgId") for s in self.store.all() if s.org_id == entity_id]


@dataclass(frozen=True, slots=True)
class SecretWritten:
    """A set: the secret as listed, and whether it was created."""

    record: SealedSecret
    created: bool


def secret_view(record: SealedSecret, *, known_org: bool = True) -> dict[str, Any]:
    """What the API shows of a secret: never its value, sealed or not."""
    out: dict[str, Any] = {
        "orgId": record.org_id, "name": record.name, "shared": record.shared,
        "updated": record.updated.isoformat(),
        "updatedBy": {"name": record.updated_by.name, "id": record.updated_by.id},
    }  # fmt: skip
    if not known_org:
        out["orphaned"] = True  # its organization was deleted (the local admin sees these)
    return out


class SecretService:
    """Args:
    store: the sealed secrets.
    cipher: seals new values; None when the operator gave no key (writes are refused).
    clock: when changes are made.
    """

    def __init__(
        self, store: SecretStore, cipher: SecretCipher | None, *, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.clock = clock or SystemClock()

    def list_secrets(
        self, scope: Scope, *, org_id: str | None = None, include_children: bool = False
    ) -> list[dict[str, Any]]:
        """The secrets of the scope (viewers), by organization and name; ``org_id``: that
        organization's (and its subtree's with ``include_children``)."""
        scope.principal.require("viewer")
        return [
            secret_view(r, known_org=r.org_id in scope.org_paths)
            for r in self.store.all()
            if self._visible(scope, r.org_id)
            and _selected(scope, r.org_id, org_id, include_children)
        ]

    def get(self, scope: Scope, org_id: str, name: str) -> dict[str, Any]:
        """One secret as listed (viewers).

        Raises:
            NotFound: no such secret, or its organization is outside the scope.
        """
        scope.principal.require("viewer")
        record = self.store.get(org_id, name) if self._visible(scope, org_id) else None
        if record is None:
            raise NotFound(f"unknown secret {name!r} of organization {org_id!r}")
        return secret_view(record, known_org=org_id in scope.org_paths)

    def put(
        self, scope: Scope, org_id: str, name: str, value: str, *, shared: bool = False
    ) -> SecretWritten:
        """Create or replace a secret (editors); it applies to deliveries within
        ``secrets.check_interval_s``.

        Raises:
            Forbidden: a viewer.
            NotFound: the organization is unknown or outside the scope.
            Invalid: a name that ``{{secrets.NAME}}`` cannot name, an empty or too long value.
            SecretsNotConfigured: no key.
        """
        scope.principal.require("editor")
        if org_id not in scope.org_paths or not scope.covers_org(org_id):
            raise NotFound(f"unknown organization {org_id!r}")
        _check_name(name)
        if not isinstance(value, str) or not value:
            raise Invalid("the value must be a non-empty string", "value")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise Invalid(f"the value must be at most {MAX_VALUE_BYTES} bytes", "value")
        if self.cipher is None:
            raise SecretsNotConfigured(
                "the secret store has no key: the operator sets EVENTRAY_SECRETS__KEY (or "
                "EVENTRAY_SECRETS__KEY_FILE) on the stack; until then secrets come from the "
                "secrets file and the environment"
            )
        author = scope.principal.author
        record = SealedSecret(org_id, name, shared, self.cipher.seal(org_id, name, shared, value),
                              self.clock.now(), author)  # fmt: skip
        created = self.store.put(record)
        log.info("secret %r of organization %r %s by %s (%s)", name, org_id,
                 "created" if created else "replaced", author.name, author.id)  # fmt: skip
        return SecretWritten(record, created)

    def delete(self, scope: Scope, org_id: str, name: str) -> dict[str, Any]:
        """Delete a secret (editors); deliveries stop rendering it within the check interval.

        Raises:
            Forbidden: a viewer.
            NotFound: no such secret, or its organization is outside the scope.
        """
        scope.principal.require("editor")
        missing = NotFound(f"unknown secret {name!r} of organization {org_id!r}")
        if not self._visible(scope, org_id):
            raise missing
        author = scope.principal.author
        gone = self.store.delete(org_id, name, at=self.clock.now(), author=author)
        if gone is None:
            raise missing
        log.info("secret %r of organization %r deleted by %s (%s)", name, org_id, author.name,
                 author.id)  # fmt: skip
        return secret_view(gone, known_org=org_id in scope.org_paths)

    def changes(
        self, scope: Scope, *, org_id: str | None = None, include_children: bool = False
    ) -> list[dict[str, Any]]:
        """Every recorded change of the scope's secrets, oldest first (viewers)."""
        scope.principal.require("viewer")
        return [
            change_to_json(c) for c in self.store.changes()
            if self._visible(scope, c.org_id) and _selected(scope, c.org_id, org_id,
                                                            include_children)
        ]  # fmt: skip

    def rotate_key(self, scope: Scope) -> dict[str, Any]:
        """Re-seal every secret not sealed with the current key (the local admin: ``eventray
        secrets rotate-key``), opening it with the previous key.

        Raises:
            Forbidden: not the local admin (a key rotation is the operator's).
            SecretsNotConfigured: no key.
            SecretSealError: an entry opens under no configured key (nothing is written).
        """
        if scope.path_key is not None:
            raise Forbidden("a key rotation is the operator's: eventray secrets rotate-key")
        if self.cipher is None:
            raise SecretsNotConfigured("no key is given (EVENTRAY_SECRETS__KEY or __KEY_FILE)")
        now, author = self.clock.now(), scope.principal.author
        stale = [r for r in self.store.all()
                 if SecretCipher.sealed_key_id(r.sealed) != self.cipher.key_id]  # fmt: skip
        resealed = [rekeyed(r, self.cipher, now, author) for r in stale]  # all open, or none
        done = self.store.reseal(resealed)
        log.info("secret store: %d secret(s) re-sealed with key %s", done, self.cipher.key_id)
        return {"resealed": done, "keyId": self.cipher.key_id,
                "secrets": len(self.store.all())}  # fmt: skip

    @staticmethod
    def _visible(scope: Scope, org_id: str) -> bool:
        # A deleted organization's secrets stay visible to the local admin only.
        return scope.path_key is None or (org_id in scope.org_paths and scope.covers_org(org_id))


def _selected(scope: Scope, org_id: str, wanted: str | None, include_children: bool) -> bool:
    if wanted is None:
        return True
    if org_id == wanted:
        return True
    if not include_children:
        return False
    parent, child = scope.org_paths.get(wanted), scope.org_paths.get(org_id)
    return parent is not None and child is not None and child.startswith(parent + "/")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > _MAX_NAME:
        raise Invalid(
            "a secret's name is letters, digits and '_', not starting with a digit, at most "
            f"{_MAX_NAME} characters (what {{{{secrets.NAME}}}} can name)",
            "name",
        )
