"""The ports the redrive and replay services run over.

``EventArchive``: the event stream as an archive (read a partition's range, read one message,
append copies and learn their sequences, how far a partition's lane has acknowledged).
``DeadLetterStore``: the DLQ, the ``events_raw`` refusals and the redrive records in the event
store. Adapters: ``nats_archive`` (JetStream) and ``memory_archive`` (the in-memory twins of
both) in the adapters package, and :mod:`eventray.pipeline.storage.dead_letters` (SQL over any
:class:`EventStore`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.replay.model import DeadLetter, DeadLetterQuery, RedriveRecord

__all__ = ["Appended", "DeadLetterStore", "EventArchive", "StoredMessage", "SubjectBounds"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the stream keeps it."""

    seq: int
    subject: str
    time_ms: int
    """When the stream stored it."""
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """The stream's answer to one appended message: its sequence, whether it held it already
    (same ``Nats-Msg-Id`` inside the duplicate window: ``seq`` is the first copy's), or why
    not (``error``; then ``seq`` is 0)."""

    seq: int
    duplicate: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class SubjectBounds:
    """The oldest and newest messages the stream holds on a subject (0 when none), and
    whether the stream has dropped older messages (its size or age limit)."""

    first_seq: int
    first_ms: int
    last_seq: int
    dropped: bool = False


@runtime_checkable
class EventArchive(Protocol):
    """The event stream, read as an archive and appended to by redrives and replays."""

    async def bounds(self, subject: str) -> SubjectBounds:
        """What the stream still holds on ``subject``."""
        ...

    def read(
        self,
        subject: str,
        *,
        start_ms: int | None = None,
        start_seq: int | None = None,
        end_seq: int,
        batch: int = 1000,
    ) -> AsyncIterator[list[StoredMessage]]:
        """``subject``'s messages in stream order, from the first stored at or after
        ``start_ms`` (or from ``start_seq``; else from the oldest) to before ``end_seq``, in
        lists of at most ``batch``."""
        ...

    async def get(self, subject: str, seq: int) -> StoredMessage | None:
        """The message at ``seq`` (on ``subject``, where sequences count per subject), or None
        when the stream no longer holds it."""
        ...

    async def append(self, messages: Sequence[OutboxMessage]) -> list[Appended]:
        """Append ``messages`` (de-duplicated by ``msg_id`` within the duplicate window) and
        return the stream's answer for each, in order.

        Raises:
            RetryableError: the stream did not answer.
        """
        ...

    async def acknowledged(self, partition: int) -> int:
        """The stream sequence through which ``partition``'s lane has acknowledged."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Redrivable entries and their redrive records, as the event store keeps them (each
    entry once: the tables are read collapsed, ``FINAL``)."""

    async def find(self, query: DeadLetterQuery) -> list[DeadLetter]:
        """Entries matching ``query``, oldest first (by :attr:`DeadLetter.position`), at most
        ``query.limit``; each with its redrive record when it has one."""
        ...

    async def record(self, records: Sequence[RedriveRecord]) -> None:
        """Store redrive records; returns once the store has them (a :meth:`find` after it
        sees them).

        Raises:
            RetryableError: the store is unavailable.
        """
        ...
