"""In-memory twins of the replay ports: the stream as an archive, and the dead letters.

:class:`MemoryArchive` reads and appends to a :class:`~.memory_stream.MemoryStream` (where
sequences count per partition, and time is the ingress's received time: the twin has no
clock of its own). :class:`MemoryDeadLetters` reads the rows a
:class:`~eventray.pipeline.storage.sink.MemoryRowSink` holds as the SQL adapter reads the
store: collapsed by each table's key (the last row wins, the DLQ's highest delivery count),
filtered, joined with the redrive records, oldest first.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.ingress import HEADER_ASSET, HEADER_RECEIVED, HEADER_REVISION, HEADER_SOURCE
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.processor import Ingested
from eventray.pipeline.replay.model import DeadLetter, DeadLetterQuery, RedriveRecord, Scope
from eventray.pipeline.replay.ports import (
    Appended,
    DeadLetterStore,
    EventArchive,
    StoredMessage,
    SubjectBounds,
)
from eventray.pipeline.replay_marks import HEADER_TRACKER, mark_headers
from eventray.pipeline.storage.dead_letters import decode_body, redrive_row
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.schema import columns_of
from eventray.pipeline.storage.sink import MemoryRowSink

__all__ = ["MemoryArchive", "MemoryDeadLetters"]


def _partition_of(subject: str) -> int | None:
    _, _, tail = subject.rpartition(".p")
    return int(tail) if tail.isdigit() else None


class MemoryArchive(EventArchive):
    """Args:
    stream: the twin stream.
    trigger_subject: appends to it go to the stream's outbox (the trigger queue).
    """

    def __init__(self, stream: MemoryStream, *, trigger_subject: str = "eventray.triggers") -> None:
        self.stream = stream
        self.trigger_subject = trigger_subject
        self.dropped = False
        """What :meth:`bounds` says of dropped messages (the twin drops none: tests set it)."""
        self._queue_seq = itertools.count(1)

    def _message(self, partition: int, subject: str, item: Ingested) -> StoredMessage:
        assert item.seq is not None
        headers = self.stream.headers.get((partition, item.seq))
        if headers is None:  # put there with MemoryStream.add: the headers it would have had
            headers = {"Nats-Msg-Id": item.event_tracker_id, HEADER_SOURCE: item.data_source_id}
            headers[HEADER_RECEIVED] = str(item.received_ms)
            if item.asset_id:
                headers[HEADER_ASSET] = item.asset_id
            if item.revision:
                headers[HEADER_REVISION] = str(item.revision)
            if item.replay is not None:
                headers.update(mark_headers(item.replay))
            if item.replay is not None or item.copy:
                headers[HEADER_TRACKER] = item.event_tracker_id
        return StoredMessage(item.seq, subject, item.received_ms, headers, item.body)

    async def bounds(self, subject: str) -> SubjectBounds:
        partition = _partition_of(subject)
        log = self.stream.log(partition) if partition is not None else []
        if not log:
            return SubjectBounds(0, 0, 0)
        return SubjectBounds(1, log[0].received_ms, len(log), self.dropped)

    async def read(
        self,
        subject: str,
        *,
        start_ms: int | None = None,
        start_seq: int | None = None,
        end_seq: int,
        batch: int = 1000,
    ) -> AsyncIterator[list[StoredMessage]]:
        partition = _partition_of(subject)
        if partition is None:
            return
        chunk: list[StoredMessage] = []
        started = False
        for item in self.stream.log(partition):
            assert item.seq is not None
            if item.seq >= end_seq:
                break
            if start_seq is not None and item.seq < start_seq:
                continue
            if start_seq is None and start_ms is not None and not started:
                if item.received_ms < start_ms:
                    continue
                started = True  # like JetStream: from the first stored at or after start_ms
            chunk.append(self._message(partition, subject, item))
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def get(self, subject: str, seq: int) -> StoredMessage | None:
        partition = _partition_of(subject)
        if partition is None:
            return None
        log = self.stream.log(partition)
        if not 1 <= seq <= len(log):
            return None
        return self._message(partition, subject, log[seq - 1])

    async def append(self, messages: Sequence[OutboxMessage]) -> list[Appended]:
        out: list[Appended] = []
        outbox = self.stream.outbox()
        for message in messages:
            if message.subject == self.trigger_subject:
                duplicate = message.msg_id in outbox.queued
                await outbox.enqueue([message])
                out.append(Appended(next(self._queue_seq), duplicate))
                continue
            known = self.stream.stored_as(message.msg_id) if message.msg_id else None
            (error,) = await self.stream.append([message], timeout_s=1.0)
            if error:
                out.append(Appended(0, False, error))
                continue
            where = known or self.stream.stored_as(message.msg_id)
            if where is None:  # no msg id: the newest of its partition
                partition = _partition_of(message.subject)
                assert partition is not None
                where = (partition, len(self.stream.log(partition)))
            out.append(Appended(where[1], known is not None))
        return out

    async def acknowledged(self, partition: int) -> int:
        return self.stream.acknowledged(partition)


# Each table's key, as the DDL sorts it (see pipeline.storage.schema).
_KEYS = {
    "dlq": ("org_id", "event_tracker_id", "stage", "stream_seq"),
    "events_raw": ("org_id", "event_tracker_id"),
    "dlq_redrive": ("org_id", "event_tracker_id", "source", "stage", "entry_seq"),
}


class MemoryDeadLetters(DeadLetterStore):
    """Args:
    sink: the rows (the pipeline's twin sink: the lanes' DLQ rows are there).
    retention: the days a record is kept.
    """

    def __init__(self, sink: MemoryRowSink, *, retention: RetentionPolicy | None = None) -> None:
        self.sink = sink
        self._retention = retention or RetentionPolicy()

    def _final(self, table: str) -> list[dict[str, Any]]:
        names = columns_of(table)
        kept: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in self.sink.rows[table]:
            item = dict(zip(names, row, strict=True))
            key = tuple(item[k] for k in _KEYS[table])
            before = kept.get(key)
            if table == "dlq" and before is not None and before["deliveries"] > item["deliveries"]:
                continue
            kept[key] = item
        return list(kept.values())

    async def record(self, records: Sequence[RedriveRecord]) -> None:
        if records:
            await self.sink.write(
                {"dlq_redrive": [redrive_row(r, self._retention) for r in records]}
            )

    async def find(self, query: DeadLetterQuery) -> list[DeadLetter]:
        records = {
            (r["org_id"], r["event_tracker_id"], r["stage"], r["entry_seq"]): r
            for r in self._final("dlq_redrive")
            if r["source"] == query.source
        }
        if query.source == "dlq":
            rows = self._final("dlq")
        else:
            failed = {r["event_tracker_id"] for r in self._final("dlq")}
            rows = [
                {**r, "error": r["reason"], "message": r["body"], "message_encoding":
                 r["body_encoding"], "deliveries": 1, "stream_seq": 0}
                for r in self._final("events_raw")
                if r["stage"] == "bind" and r["event_tracker_id"] not in failed
            ]  # fmt: skip
        scope, org = Scope(query.scope), Scope(query.path_key)
        out: list[DeadLetter] = []
        for row in rows:
            if query.scope and not scope.covers(row["path_key"]):
                continue
            if query.path_key and not org.covers(row["path_key"]):
                continue
            if query.event_tracker_id not in (None, row["event_tracker_id"]):
                continue
            if query.stage not in (None, row["stage"]) or query.asset_id not in (
                None,
                row["asset_id"],
            ):
                continue
            created = row["created"]
            if (query.since_ms is not None and created < query.since_ms) or (
                query.until_ms is not None and created >= query.until_ms
            ):
                continue
            found = records.get(
                (row["org_id"], row["event_tracker_id"], row["stage"], row["stream_seq"])
            )
            if (query.redriven is False and found) or (query.redriven is True and not found):
                continue
            record = None
            if found is not None:
                record = RedriveRecord(
                    query.source, row["event_tracker_id"], row["org_id"], row["path_key"],
                    row["stage"], row["stream_seq"], created, row["error"], found["redrive_id"],
                    found["requested_by"], found["msg_id"], found["partition"],
                    found["stream_seq"], found["created"],
                )  # fmt: skip
            entry = DeadLetter(
                query.source, row["event_tracker_id"], row["org_id"], row["path_key"],
                row["stage"], row["error"], created, row["asset_id"], row["data_source_id"],
                decode_body(row["message"], row["message_encoding"]), row["stream_seq"],
                row["deliveries"], record,
            )  # fmt: skip
            if query.after is not None and entry.position <= query.after:
                continue
            out.append(entry)
        out.sort(key=lambda e: e.position)
        return out[: query.limit]
