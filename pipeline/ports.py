"""Ports: the contracts the domain needs from the outside world.

Each port is a ``typing.Protocol``; adapters in :mod:`eventray.pipeline.adapters` name the protocol they
implement so conformance is checked where they are defined. The domain only ever sees these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BlobStore",
    "Clock",
    "ConfigStore",
    "EventStore",
    "SecretsProvider",
    "StateSnapshot",
    "StateStore",
]


@runtime_checkable
class Clock(Protocol):
    """Where time comes from, so rules with cooldowns and dates are testable."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Shared byte storage (the script cache's L2): MinIO/S3 in production."""

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""
        ...


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Rule state for one batch: the stored values (absent keys are simply missing) and the
    last stream sequence already applied for the partition (0 if none)."""

    values: dict[str, Any] = field(default_factory=dict)
    applied_seq: int = 0


@runtime_checkable
class StateStore(Protocol):
    """Durable rule-variable state under ``state:{orgId}:{businessRuleId}:{var}``.

    Built for batches: one call loads every key a batch needs, one atomic call applies every
    change together with the partition's sequence fence, so a redelivered batch never applies
    its state twice.
    """

    def load(self, keys: Sequence[str], *, partition: str) -> StateSnapshot:
        """Values for ``keys`` and the partition's last applied sequence."""
        ...

    def commit(self, writes: Mapping[str, Any], *, partition: str, seq: int) -> bool:
        """Apply ``writes`` and record ``seq`` as applied, atomically.

        Returns False, applying nothing, when ``seq`` is not newer than the recorded one
        (the batch was already applied). Raises :class:`pipeline.errors.StateStoreError` when
        the store fails; then nothing was applied.
        """
        ...


@runtime_checkable
class SecretsProvider(Protocol):
    """Resolves ``{{secrets.NAME}}`` placeholders."""

    def secret(self, name: str) -> str | None:
        """The secret's value, or None if there is no such secret."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """The analytical store (ClickHouse in production, chDB embedded).

    The tables and their DDL are fixed in :mod:`pipeline.storage.schema`; adapters only move SQL
    and rows. Writes come in batches (one call per table per pipeline batch).
    """

    def ensure_schema(self) -> None:
        """Create every table if missing (idempotent)."""
        ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (column -> value) into ``table`` in one round trip.

        Raises :class:`pipeline.errors.RetryableError` subclasses when the store is unreachable.
        """
        ...

    def insert_encoded(self, table: str, block: bytes) -> None:
        """Insert rows already encoded as ``JSONEachRow`` lines (see
        :func:`pipeline.storage.rows.json_each_row`): lets the producer encode in its own
        process, so the store's owner only hands bytes to the engine."""
        ...

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query with ``{name:Type}`` parameters; rows as dicts."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@runtime_checkable
class ConfigStore(Protocol):
    """The operational source of truth for entities (MongoDB in production).

    Entities are stored as the documents users write (camelCase, with ``kind`` and ``id``);
    every change bumps a revision so running actors can tell that their catalog is stale.
    """

    def put(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Upsert documents by (kind, id); returns the new revision."""
        ...

    def delete(self, kind: str, entity_id: str) -> int:
        """Remove one entity; returns the new revision (unchanged if it did not exist)."""
        ...

    def documents(self) -> list[dict[str, Any]]:
        """Every stored document."""
        ...

    def revision(self) -> int:
        """A number that grows with every change."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...
