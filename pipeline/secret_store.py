"""The encrypted secret store: per-organization secrets written through the management API or
``eventray secrets``, sealed with the operator's key (:mod:`eventray.pipeline.secret_crypto`).

The store (:class:`SecretStore`) keeps sealed values and never sees a key or a plain value:
an adapter is storage only (:class:`MemorySecretStore` here, ``<data_dir>/secrets.enc`` in
``pipeline.adapters.secrets_enc``, MongoDB in ``pipeline.adapters.mongo_secrets``). Every
change is recorded beside the secrets (who, when, which organization and name, the operation;
never a value). Sealing happens in the management service; opening in :class:`StoredSecrets`,
the lanes' view, which follows the store's revision so a changed value applies without a
restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from eventray.pipeline.ports import Author
from eventray.pipeline.secret_crypto import SecretCipher, SecretSealError
from eventray.pipeline.secrets import Secret, SecretTable

__all__ = [
    "MemorySecretStore",
    "SealedSecret",
    "SecretChange",
    "SecretOp",
    "SecretStore",
    "StoredSecrets",
    "change_from_json",
    "change_to_json",
    "sealed_from_json",
    "sealed_to_json",
]

log = logging.getLogger(__name__)

SecretOp = Literal["set", "delete", "rekey"]


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """One secret as stored: everything but its value is readable.

    Attributes:
        org_id: the organization it belongs to.
        name: what ``{{secrets.NAME}}`` names.
        shared: whether the organization's descendants may render it too.
        sealed: the value, sealed (:meth:`SecretCipher.seal`).
        updated: when it was last set, UTC.
        updated_by: who set it.
    """

    org_id: str
    name: str
    shared: bool
    sealed: str
    updated: datetime
    updated_by: Author

    def __repr__(self) -> str:  # the sealed value stays out of reprs too
        return f"SealedSecret({self.org_id!r}, {self.name!r}, shared={self.shared})"


@dataclass(frozen=True, slots=True)
class SecretChange:
    """One recorded change: never the value.

    Attributes:
        org_id: the secret's organization.
        name: the secret's name.
        op: ``set`` (created or replaced), ``delete``, or ``rekey`` (re-sealed with a new key,
            the value unchanged).
        at: when, UTC.
        author: who.
        shared: the flag after a ``set`` or ``rekey`` (None after a delete).
        created: a ``set`` that created the secret.
    """

    org_id: str
    name: str
    op: SecretOp
    at: datetime
    author: Author
    shared: bool | None = None
    created: bool = False


def sealed_to_json(record: SealedSecret) -> dict[str, Any]:
    """How the file store and MongoDB keep a secret."""
    return {"orgId": record.org_id, "name": record.name, "shared": record.shared,
            "sealed": record.sealed, "updated": record.updated.isoformat(),
            "updatedBy": {"name": record.updated_by.name, "id": record.updated_by.id}}  # fmt: skip


def sealed_from_json(data: Mapping[str, Any]) -> SealedSecret:
    """The inverse of :func:`sealed_to_json`."""
    by = data.get("updatedBy") or {}
    return SealedSecret(
        org_id=str(data["orgId"]), name=str(data["name"]), shared=bool(data["shared"]),
        sealed=str(data["sealed"]), updated=datetime.fromisoformat(str(data["updated"])),
        updated_by=Author(str(by.get("name", "")), str(by.get("id", ""))),
    )  # fmt: skip


def change_to_json(change: SecretChange) -> dict[str, Any]:
    """A change as stored and as the API shows it."""
    return {"orgId": change.org_id, "name": change.name, "op": change.op,
            "at": change.at.isoformat(), "author": {"name": change.author.name,
                                                    "id": change.author.id},
            "shared": change.shared, "created": change.created}  # fmt: skip


def change_from_json(data: Mapping[str, Any]) -> SecretChange:
    """The inverse of :func:`change_to_json`."""
    author = data.get("author") or {}
    op = str(data["op"])
    if op not in ("set", "delete", "rekey"):
        raise ValueError(f"unknown secret change {op!r}")
    shared = data.get("shared")
    return SecretChange(
        org_id=str(data["orgId"]), name=str(data["name"]), op=op,  # type: ignore[arg-type]
        at=datetime.fromisoformat(str(data["at"])),
        author=Author(str(author.get("name", "")), str(author.get("id", ""))),
        shared=None if shared is None else bool(shared), created=bool(data.get("created")),
    )  # fmt: skip


@runtime_checkable
class SecretStore(Protocol):
    """Where sealed secrets and their changes are kept."""

    def revision(self) -> int:
        """A number that moves with every change (0 for a new store); cheap, as the lanes
        ask it about once a second."""
        ...

    def all(self) -> list[SealedSecret]:
        """Every secret, by organization and name."""
        ...

    def get(self, org_id: str, name: str) -> SealedSecret | None:
        """One secret, or None."""
        ...

    def put(self, record: SealedSecret) -> bool:
        """Create or replace ``record``'s secret and record the change (``set``, by
        ``record.updated_by`` at ``record.updated``); True if it was created."""
        ...

    def delete(
        self, org_id: str, name: str, *, at: datetime, author: Author
    ) -> SealedSecret | None:
        """Remove a secret and record the change; the removed one, None if there was none
        (nothing is recorded then)."""
        ...

    def reseal(self, records: Sequence[SealedSecret]) -> int:
        """Replace the sealed values of existing secrets (a key rotation: same value, new
        key), recording a ``rekey`` change each; how many were replaced (a secret deleted
        meanwhile is left deleted)."""
        ...

    def changes(self) -> list[SecretChange]:
        """Every recorded change, oldest first."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


class MemorySecretStore(SecretStore):
    """The in-memory twin (tests, the single-process baseline)."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], SealedSecret] = {}
        self._changes: list[SecretChange] = []
        self._revision = 0
        self._mutex = threading.Lock()

    def revision(self) -> int:
        return self._revision

    def all(self) -> list[SealedSecret]:
        with self._mutex:
            return [self._secrets[k] for k in sorted(self._secrets)]

    def get(self, org_id: str, name: str) -> SealedSecret | None:
        return self._secrets.get((org_id, name))

    def put(self, record: SealedSecret) -> bool:
        with self._mutex:
            key = (record.org_id, record.name)
            created = key not in self._secrets
            self._secrets[key] = record
            self._changes.append(SecretChange(record.org_id, record.name, "set", record.updated,
                                              record.updated_by, record.shared, created))  # fmt: skip
            self._revision += 1
            return created

    def delete(
        self, org_id: str, name: str, *, at: datetime, author: Author
    ) -> SealedSecret | None:
        with self._mutex:
            gone = self._secrets.pop((org_id, name), None)
            if gone is not None:
                self._changes.append(SecretChange(org_id, name, "delete", at, author))
                self._revision += 1
            return gone

    def reseal(self, records: Sequence[SealedSecret]) -> int:
        with self._mutex:
            done = 0
            for record in records:
                key = (record.org_id, record.name)
                if key in self._secrets:
                    self._secrets[key] = record
                    self._changes.append(SecretChange(record.org_id, record.name, "rekey",
                                                      record.updated, record.updated_by,
                                                      record.shared))  # fmt: skip
                    done += 1
            if done:
                self._revision += 1
            return done

    def changes(self) -> list[SecretChange]:
        with self._mutex:
            return list(self._changes)

    def close(self) -> None:
        """Nothing to release."""


def rekeyed(
    record: SealedSecret, cipher: SecretCipher, at: datetime, author: Author
) -> SealedSecret:
    """``record`` opened (with whichever configured key sealed it) and sealed again with the
    current key."""
    value = cipher.open(record.org_id, record.name, record.shared, record.sealed)
    sealed = cipher.seal(record.org_id, record.name, record.shared, value)
    return replace(record, sealed=sealed, updated=at, updated_by=author)


class StoredSecrets:
    """The store's secrets, opened: what the lanes render (see ``LayeredSecrets``).

    The table is read when this is built and again when the store's revision moved (asked at
    most every ``check_every_s``; on a thread of its own when ``background``, so a slow store
    never holds up the caller's event loop). Only entries whose sealed value changed are
    opened again. An entry that does not open (wrong key, altered) keeps its last good value
    if it had one, and is logged by organization and name (never a value); with ``strict``
    the first load raises instead (``eventray up`` checks this way before starting).

    Args:
        store: the sealed secrets.
        cipher: their key(s).
        check_every_s: how often, at most, the revision is asked.
        background: refresh on a daemon thread (the lanes) or in the caller (tests).
        strict: the first load raises what does not open.
    """

    def __init__(
        self,
        store: SecretStore,
        cipher: SecretCipher,
        *,
        check_every_s: float = 1.0,
        background: bool = True,
        strict: bool = False,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.check_every_s = check_every_s
        self.background = background
        self._table: dict[str, dict[str, Secret]] = {}
        self._opened: dict[tuple[str, str], tuple[str, Secret]] = {}
        self._revision: int | None = None
        self._checked = time.monotonic()
        self._refreshing: threading.Thread | None = None
        self._mutex = threading.Lock()
        if strict:
            self.refresh(strict=True)
        else:  # a store that is down at start: no secrets yet, read again at the next check
            self._refresh_quietly()

    def table(self) -> SecretTable:
        """The current table (the same object until something changed)."""
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            if not self.background:
                self._refresh_quietly()
            elif self._refreshing is None or not self._refreshing.is_alive():
                self._refreshing = threading.Thread(
                    target=self._refresh_quietly, name="secrets-refresh", daemon=True
                )
                self._refreshing.start()
        return self._table

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a store that is down: keep what we have, say why
            log.error("secret store not read, the previous secrets stay in use: %s: %s",
                      type(exc).__name__, exc)  # fmt: skip

    def refresh(self, *, strict: bool = False) -> bool:
        """Read the store if its revision moved; whether the table changed."""
        with self._mutex:
            revision = self.store.revision()
            if revision == self._revision:
                return False
            opened: dict[tuple[str, str], tuple[str, Secret]] = {}
            failed: list[str] = []
            for record in self.store.all():
                key = (record.org_id, record.name)
                known = self._opened.get(key)
                if known is not None and known[0] == record.sealed:
                    opened[key] = known
                    continue
                try:
                    value = self.cipher.open(record.org_id, record.name, record.shared,
                                             record.sealed)  # fmt: skip
                except SecretSealError as exc:
                    if strict:
                        raise
                    failed.append(str(exc))
                    if known is not None:
                        opened[key] = known  # the last good value stays in use
                    continue
                opened[key] = (record.sealed, Secret(value, record.shared))
            for reason in failed[:3]:
                log.error("secret store: %s", reason)
            if len(failed) > 3:
                log.error("secret store: %d more secrets do not open", len(failed) - 3)
            table: dict[str, dict[str, Secret]] = {}
            for (org_id, name), (_, secret) in opened.items():
                table.setdefault(org_id, {})[name] = secret
            self._opened, self._table, self._revision = opened, table, revision
            return True
