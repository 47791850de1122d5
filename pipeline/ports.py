"""Ports: the contracts the domain needs from the outside world.

Each port is a ``typing.Protocol``; adapters in :mod:`eventray.pipeline.adapters` name the protocol they
implement so conformance is checked where they are defined. The domain only ever sees these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from eventray.pipeline.admission import Backlog
    from eventray.pipeline.jwks import JwksFetch
    from eventray.pipeline.processor import Ingested
    from eventray.pipeline.secret_crypto import SecretCipher
    from eventray.pipeline.secret_store import SecretStore
    from eventray.pipeline.secrets import SecretsSource
    from eventray.pipeline.triggers.delivery import Sender

__all__ = [
    "LOCAL_ADMIN",
    "Adapters",
    "Author",
    "BlobStore",
    "Clock",
    "ConfigStore",
    "EntityChange",
    "EventSource",
    "EventStore",
    "Outbox",
    "OutboxMessage",
    "Queue",
    "QueuedMessage",
    "RowSink",
    "SecretsProvider",
    "StateSnapshot",
    "StateStore",
    "Stream",
    "StreamDrop",
    "TokenRecord",
    "TokenStore",
    "Uplink",
    "UplinkSource",
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

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert row tuples into ``table`` in one statement.

        Each row holds the table's columns in DDL order
        (:func:`eventray.pipeline.storage.schema.columns_of`), dates as epoch milliseconds
        (see :mod:`eventray.pipeline.storage.rows`); adapters send them columnar (Arrow to
        chDB, Native to ClickHouse).

        Raises:
            RetryableError: the store is unreachable (subclasses name which).
            PermanentError: the store refused the rows.
        """
        ...

    def select(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only query with ``{name:Type}`` parameters; rows as dicts."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class Author:
    """Who made a configuration change: an API token (its name and id), or the local admin
    (``eventray apply`` on the data directory, the demo, the stack's own start)."""

    name: str
    id: str = ""


LOCAL_ADMIN = Author("local admin", "local")
"""The author of changes made without an API token, guarded by the data directory's admin
token (see ``eventray.cluster.admin_token``)."""


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One recorded change of one entity: the revision history the management API shows and
    rolls back from.

    Attributes:
        kind: the entity's kind.
        entity_id: its id.
        revision: the entity's own revision after the change (1: created; numbering goes on
            across a delete and a re-create, so a revision names one state for ever).
        store_revision: the config store revision the change produced (several entities
            changed in one write share it).
        at: when, UTC.
        author: who.
        op: ``create``, ``update`` or ``delete``.
        before: the stored document before the change (None: it did not exist).
        after: the stored document after the change (None: deleted).
        note: why, when the writer said (``rollback to revision 3``).
    """

    kind: str
    entity_id: str
    revision: int
    store_revision: int
    at: datetime
    author: Author
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str = ""


@runtime_checkable
class ConfigStore(Protocol):
    """The operational source of truth for entities (MongoDB in production).

    Entities are stored as the documents users write (camelCase, with ``kind`` and ``id``);
    every change bumps a revision so running actors can tell that their catalog is stale.

    Each entity also has a revision of its own, and every change that alters a document is
    recorded with who made it and the document before and after (:class:`EntityChange`), in
    the same write: the management API's history, rollback and ``If-Match`` rest on them. A
    put that rewrites a document unchanged records nothing for it (the store revision still
    counts the put).
    """

    def put(
        self,
        documents: Sequence[Mapping[str, Any]],
        *,
        author: Author = LOCAL_ADMIN,
        expected: Mapping[tuple[str, str], int] | None = None,
        note: str = "",
    ) -> int:
        """Upsert documents by (kind, id); returns the new revision.

        Args:
            documents: the entities to store.
            author: recorded with each change.
            expected: per (kind, id), the entity revision the caller read (0: it must not
                exist); checked in the same write.
            note: recorded with each change.

        Raises:
            RevisionConflictError: an entity is not at its expected revision; nothing stored.
        """
        ...

    def delete(
        self,
        kind: str,
        entity_id: str,
        *,
        author: Author = LOCAL_ADMIN,
        expected: int | None = None,
        note: str = "",
    ) -> int:
        """Remove one entity; returns the new revision (unchanged if it did not exist).

        Raises:
            RevisionConflictError: ``expected`` is given and the entity is at another revision.
        """
        ...

    def documents(self) -> list[dict[str, Any]]:
        """Every stored document."""
        ...

    def revision(self) -> int:
        """A number that grows with every change."""
        ...

    def entity_revisions(self) -> dict[tuple[str, str], int]:
        """Each stored entity's own revision (0 for one stored before revisions were kept)."""
        ...

    def snapshot(self) -> tuple[int, list[dict[str, Any]], dict[tuple[str, str], int]]:
        """The revision, every document and every entity revision, of one and the same
        revision (what :meth:`revision`, :meth:`documents` and :meth:`entity_revisions` give
        when nothing writes in between), read at once."""
        ...

    def history(self, kind: str, entity_id: str) -> list[EntityChange]:
        """The recorded changes of one entity, oldest first (also after it was deleted)."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A management API token as stored: never the token itself, only its SHA-256.

    Attributes:
        id: a short public id (shown in listings and the history's authors; not a secret).
        name: what the creator called it.
        org_id: the organization whose subtree is its scope.
        role: ``admin``, ``editor``, ``viewer`` or ``ingest``.
        token_hash: hex SHA-256 of the token.
        created: when it was made, UTC.
        expires: when it stops working (None: never).
        revoked: when it was revoked (None: not revoked).
        created_by: the id of the token that made it (``local`` for the CLI).
    """

    id: str
    name: str
    org_id: str
    role: str
    token_hash: str
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None
    created_by: str = ""


@runtime_checkable
class TokenStore(Protocol):
    """Where management API tokens are kept (a file in the data directory, or MongoDB)."""

    def add(self, record: TokenRecord) -> None:
        """Store a new token (its id and hash are new)."""
        ...

    def find(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, revoked or expired ones included; None if none."""
        ...

    def get(self, token_id: str) -> TokenRecord | None:
        """The token with this id, or None."""
        ...

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        ...

    def revoke(self, token_id: str, at: datetime) -> TokenRecord | None:
        """Mark a token revoked (kept, for the history's authors); the record as it is now,
        None if there is no such token. Revoking twice keeps the first time."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message for the stream: an ingested event or a trigger delivery (durable,
    de-duplicated by ``msg_id``), or a ``publish`` route's message."""

    subject: str
    body: bytes
    msg_id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class EventSource(Protocol):
    """One partition of the event stream, owned by one consumer at a time.

    Deliveries come in stream order; acknowledging one acknowledges everything before it, so
    a batch costs one acknowledgement and nothing is acknowledged before it is handled.
    """

    partition: int

    async def fetch(self, max_events: int, *, timeout_s: float, linger_s: float) -> list[Ingested]:
        """Up to ``max_events``; returns when that many arrived, when no new one arrived for
        ``linger_s`` after the first (a batch closes on size or age), or empty after
        ``timeout_s``."""
        ...

    async def ack_through(self, last: Ingested) -> None:
        """Acknowledge ``last`` and every earlier delivery of this partition."""
        ...

    async def pending(self) -> int:
        """Events of the partition not yet acknowledged (the consumer lag)."""
        ...

    async def close(self) -> None:
        """Stop fetching (unacknowledged events are delivered again to the next owner)."""
        ...


@runtime_checkable
class Outbox(Protocol):
    """Where a batch's outputs go before it is acknowledged: trigger deliveries (durable, so a
    slow webhook never holds a partition) and ``publish`` routes (at most once)."""

    @property
    def max_payload(self) -> int:
        """The largest message body the stream takes; bigger outputs fail their event."""
        ...

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Store ``messages`` durably (de-duplicated by ``msg_id``); returns once stored."""
        ...

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        """Fan ``messages`` out to their subjects' subscribers (not stored)."""
        ...


@runtime_checkable
class RowSink(Protocol):
    """Where a batch's rows go; returns once they are durably stored."""

    async def write(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        """Store row tuples per table (see :meth:`EventStore.insert`)."""
        ...


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message of a work queue (the trigger queue): acknowledged one by one."""

    body: bytes
    seq: int
    delivered: int
    ack: str


@runtime_checkable
class Queue(Protocol):
    """A durable work queue with explicit acknowledgements: an unacknowledged message comes
    back after the queue's acknowledgement wait."""

    async def fetch(self, max_messages: int, *, timeout_s: float) -> list[QueuedMessage]:
        """Up to ``max_messages``, or empty after ``timeout_s``."""
        ...

    async def ack(self, message: QueuedMessage) -> None:
        """Acknowledge one message."""
        ...

    async def close(self) -> None:
        """Stop fetching."""
        ...


@dataclass(frozen=True, slots=True)
class Uplink:
    """One MQTT publish as the ingress takes it from the broker (its topic named the data
    source and the asset, see :mod:`eventray.pipeline.mqtt`)."""

    data_source_id: str
    asset_uuid: str
    payload: bytes
    qos: int
    seq: int = 0
    """Its sequence in the broker's store (QoS 1/2); 0 for QoS 0, which is not stored."""
    store_id: str = ""
    """Which store ``seq`` counts in (a new store numbers from 1 again)."""


@runtime_checkable
class UplinkSource(Protocol):
    """MQTT publishes the broker took, for the ingress to bring into the stream: QoS 1/2 ones
    from the broker's store (the device had its PUBACK once they were stored there, and they
    stay until :meth:`settle` says done), QoS 0 ones as they come (at most once)."""

    async def fetch(self, max_uplinks: int, *, timeout_s: float) -> list[Uplink]:
        """Up to ``max_uplinks``, or empty after ``timeout_s``."""
        ...

    async def settle(
        self, done: Sequence[Uplink], retry: Sequence[Uplink], *, delay_s: float
    ) -> None:
        """Forget ``done`` (published into the stream, or kept as refused); deliver ``retry``
        again after ``delay_s`` (the stream did not take them; a QoS 0 one is dropped)."""
        ...

    async def close(self) -> None:
        """Stop fetching (what is not settled is delivered again later)."""
        ...


@dataclass(frozen=True, slots=True)
class StreamDrop:
    """Events of a partition the stream dropped (its size or age limit) before its consumer
    took them: lost to the pipeline. The stream no longer holds them, so how many is not
    known: the partition's events in stream sequences ``first_seq`` to ``last_seq`` are gone,
    at least the one at ``first_seq``."""

    partition: int
    first_seq: int
    last_seq: int


@runtime_checkable
class Stream(Protocol):
    """A connection to the event stream: partitions to consume, an outbox, config changes."""

    async def connect(self) -> None:
        """Open the connection (idempotent)."""
        ...

    async def append(self, messages: Sequence[OutboxMessage], *, timeout_s: float) -> list[str]:
        """Store messages in the stream (ingested events); returns once the stream answered
        for every one: per message ``""`` when stored (a second append with the same
        ``msg_id`` inside the duplicate window is stored once), else why not.

        Raises:
            RetryableError: the stream is unreachable or did not answer in time.
        """
        ...

    async def pending(self, partition: int) -> int:
        """Events of ``partition`` not yet acknowledged by its consumer (the lag)."""
        ...

    async def backlog(self, partition: int) -> Backlog:
        """The lag and how many events the partition's consumer acknowledged so far (from
        which the ingress measures the drain rate)."""
        ...

    async def dropped(self, partition: int) -> StreamDrop | None:
        """Whether the stream dropped events of ``partition`` that its consumer had not taken
        since the last call (for the same partition on this connection); None if not. Call it
        often (the ingress does every half second): a drop is noticed by comparing with what
        the previous call saw waiting."""
        ...

    async def queue(self, name: str, subject: str, *, ack_wait_s: float, max_pending: int) -> Queue:
        """The durable work queue ``name`` over ``subject``."""
        ...

    async def source(self, partition: int) -> EventSource:
        """Take ownership of ``partition``: everything not yet acknowledged is delivered to the
        returned source, in order, before anything newer."""
        ...

    def outbox(self) -> Outbox:
        """The outbox over this connection."""
        ...

    async def uplinks(self) -> UplinkSource:
        """The MQTT uplinks waiting for the ingress (several ingresses share them).

        Raises:
            RetryableError: the broker has no MQTT store yet (no listener, or not started).
        """
        ...

    async def watch_config(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Call ``changed`` whenever the entities change (``eventray apply``)."""
        ...

    async def config_changed(self) -> None:
        """Tell every watcher that the entities changed."""
        ...

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        ...


@runtime_checkable
class Adapters(Protocol):
    """Builds the adapter of each port, in the process that uses it.

    The composition root (``eventray.cluster.wiring``) implements it as plain picklable data,
    so an actor is handed one and builds its connections itself: no driver object ever crosses
    a process boundary, and no actor imports a concrete adapter.
    """

    def stream(self) -> Stream:
        """A new (unconnected) connection to the event stream."""
        ...

    def state_store(self) -> StateStore:
        """Rule state."""
        ...

    def event_store(self) -> EventStore:
        """The analytical store (only the store actor opens it)."""
        ...

    def config_store(self) -> ConfigStore:
        """The entities."""
        ...

    def token_store(self) -> TokenStore:
        """The management API's tokens."""
        ...

    def blob_store(self) -> BlobStore | None:
        """The script cache's L2 (shared by every node), if any."""
        ...

    def local_blob_store(self) -> BlobStore:
        """The script cache's L1: this node's own directory."""
        ...

    def sender(self) -> Sender:
        """One sender for every trigger transport."""
        ...

    def secrets(self) -> SecretsSource:
        """Per-organization secrets for trigger deliveries."""
        ...

    def secret_store(self) -> SecretStore:
        """The encrypted secret store (sealed values; the management API writes it)."""
        ...

    def secret_cipher(self) -> SecretCipher | None:
        """The operator's key(s) for the secret store; None when none is given."""
        ...

    def jwks_fetch(self) -> JwksFetch:
        """Fetches the key sets of OAuth2 data sources (the ingress's)."""
        ...
