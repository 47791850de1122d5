"""The in-memory twin of the JetStream adapter: a partitioned log with AckAll consumers.

It keeps the semantics the pipeline relies on, so the whole pipeline runs in a unit test (and
in ``eventray demo --local``) without a server: deliveries in stream order per partition,
acknowledging one acknowledges everything before it, a new owner of a partition gets every
unacknowledged event again before anything newer, queued outbox messages are de-duplicated by
id, and a batch closes on size or age.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from eventray.pipeline.admission import Backlog
from eventray.pipeline.ingress import (
    HEADER_ASSET,
    HEADER_RECEIVED,
    HEADER_REVISION,
    HEADER_SOURCE,
)
from eventray.pipeline.ports import (
    EventSource,
    Outbox,
    OutboxMessage,
    Queue,
    QueuedMessage,
    Stream,
    StreamDrop,
    Uplink,
    UplinkSource,
)
from eventray.pipeline.processor import Ingested
from eventray.pipeline.replay_marks import HEADER_TRACKER, parse_mark

__all__ = ["MemoryOutbox", "MemoryQueue", "MemorySource", "MemoryStream", "MemoryUplinks"]


@dataclass(slots=True)
class _Partition:
    log: list[Ingested] = field(default_factory=list)
    acked: int = 0  # events acknowledged (a prefix of the log)
    arrived: asyncio.Event | None = None


class MemorySource(EventSource):
    """One partition's consumer (see :meth:`MemoryStream.source`)."""

    def __init__(self, stream: MemoryStream, partition: int) -> None:
        self.partition = partition
        self._stream = stream
        self._part = stream._partition(partition)
        self._next = self._part.acked  # a new owner starts at the acknowledged floor
        self._closed = False

    async def fetch(self, max_events: int, *, timeout_s: float, linger_s: float) -> list[Ingested]:
        part = self._part
        if part.arrived is None:
            part.arrived = asyncio.Event()
        deadline = time.monotonic() + timeout_s
        seen = -1
        while not self._closed:
            available = len(part.log) - self._next
            if available >= max_events:
                break
            if available and available == seen:
                break  # nothing new during the linger: hand over what is there
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            seen = available
            part.arrived.clear()
            wait = min(remaining, linger_s) if available else remaining
            try:
                await asyncio.wait_for(part.arrived.wait(), wait)
            except TimeoutError:
                if not available:
                    break
        taken = part.log[self._next : self._next + max_events]
        self._next += len(taken)
        # Each delivery carries how many times this event was handed out (1 the first time).
        return [replace(item, delivered=self._stream._count(item)) for item in taken]

    async def ack_through(self, last: Ingested) -> None:
        if last.seq is None:
            raise ValueError("cannot acknowledge an event without a stream sequence")
        self._part.acked = max(self._part.acked, last.seq)

    async def pending(self) -> int:
        return len(self._part.log) - self._part.acked

    async def close(self) -> None:
        self._closed = True


class MemoryOutbox(Outbox):
    """Collects what a pipeline queues and publishes (``queued`` keeps one per id)."""

    def __init__(self, *, max_payload: int = 1024 * 1024) -> None:
        self._max_payload = max_payload
        self.queued: dict[str, OutboxMessage] = {}
        self.published: list[OutboxMessage] = []
        self.acked: set[str] = set()

    @property
    def max_payload(self) -> int:
        return self._max_payload

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        for message in messages:
            if len(message.body) > self.max_payload:
                raise ValueError(f"message of {len(message.body)} bytes exceeds max_payload")
            self.queued.setdefault(message.msg_id or str(len(self.queued)), message)

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        self.published.extend(messages)


class MemoryQueue(Queue):
    """The outbox's queued messages of one subject, acknowledged one by one."""

    def __init__(self, outbox: MemoryOutbox, subject: str) -> None:
        self._outbox = outbox
        self._subject = subject
        self._handed: dict[str, int] = {}

    async def fetch(self, max_messages: int, *, timeout_s: float) -> list[QueuedMessage]:
        deadline = time.monotonic() + timeout_s
        while True:
            ready = [
                (key, message)
                for key, message in self._outbox.queued.items()
                if message.subject == self._subject
                and key not in self._outbox.acked
                and key not in self._handed
            ][:max_messages]
            if ready or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        out = []
        for seq, (key, message) in enumerate(ready, start=len(self._handed) + 1):
            self._handed[key] = seq
            out.append(QueuedMessage(message.body, seq, 1, key))
        return out

    async def ack(self, message: QueuedMessage) -> None:
        self._outbox.acked.add(message.ack)

    async def close(self) -> None:
        return None


class MemoryUplinks(UplinkSource):
    """MQTT uplinks put by a test (:meth:`put`), with the broker's store semantics: a QoS 1
    uplink stays until settled done, one to retry comes back after its delay, QoS 0 ones are
    handed out once."""

    def __init__(self) -> None:
        self.waiting: list[tuple[float, Uplink]] = []
        self.done: list[Uplink] = []
        self._seq = 0

    def put(self, data_source_id: str, asset_uuid: str, payload: bytes, qos: int = 1) -> Uplink:
        if qos:
            self._seq += 1
        uplink = Uplink(data_source_id, asset_uuid, payload, qos, self._seq if qos else 0, "memory")
        self.waiting.append((0.0, uplink))
        return uplink

    async def fetch(self, max_uplinks: int, *, timeout_s: float) -> list[Uplink]:
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            ready = [u for at, u in self.waiting if at <= now][:max_uplinks]
            if ready or now >= deadline:
                break
            await asyncio.sleep(0.01)
        handed = {id(u) for u in ready}
        self.waiting = [(at, u) for at, u in self.waiting if id(u) not in handed]
        return ready

    async def settle(
        self, done: Sequence[Uplink], retry: Sequence[Uplink], *, delay_s: float
    ) -> None:
        self.done.extend(done)
        at = time.monotonic() + delay_s
        self.waiting.extend((at, u) for u in retry if u.qos)

    async def close(self) -> None:
        return None


class MemoryStream(Stream):
    """Partitions of ingested events in memory.

    Sequences count per partition from 1 (JetStream's count per stream; the pipeline only
    needs them to grow within a partition, which is what its state fence compares).
    """

    def __init__(self, *, max_payload: int = 1024 * 1024) -> None:
        self._partitions: dict[int, _Partition] = {}
        self._handed: dict[str, int] = {}
        self._outbox = MemoryOutbox(max_payload=max_payload)
        self._watchers: list[Callable[[], Awaitable[None]]] = []
        self.mqtt = MemoryUplinks()
        self.headers: dict[tuple[int, int], dict[str, str]] = {}
        """The headers of each message :meth:`append` stored, by (partition, sequence)."""
        self._ids: dict[str, tuple[int, int]] = {}  # Nats-Msg-Id -> (partition, sequence)

    def _partition(self, partition: int) -> _Partition:
        return self._partitions.setdefault(partition, _Partition())

    def _count(self, item: Ingested) -> int:
        count = self._handed.get(item.event_tracker_id, 0) + 1
        self._handed[item.event_tracker_id] = count
        return count

    def add(self, partition: int, items: Sequence[Ingested]) -> list[Ingested]:
        """Add ``items`` to a partition, stamping their sequences; returns them as stored."""
        part = self._partition(partition)
        stored = []
        for item in items:
            stored_item = replace(item, seq=len(part.log) + 1)
            part.log.append(stored_item)
            stored.append(stored_item)
        if part.arrived is not None:
            part.arrived.set()
        return stored

    def log(self, partition: int) -> list[Ingested]:
        """Every event ``partition`` holds, in stream order (``seq`` = position + 1)."""
        return list(self._partition(partition).log)

    def acknowledged(self, partition: int) -> int:
        """The sequence through which ``partition`` is acknowledged."""
        return self._partition(partition).acked

    def expire_duplicates(self) -> None:
        """Let the duplicate window pass: a message id appended before may be appended again
        (the twin's window otherwise lasts for ever)."""
        self._ids.clear()

    def stored_as(self, msg_id: str) -> tuple[int, int] | None:
        """Where :meth:`append` stored the message with this ``Nats-Msg-Id``: (partition,
        sequence), or None."""
        return self._ids.get(msg_id)

    async def connect(self) -> None:
        return None

    async def append(self, messages: Sequence[OutboxMessage], *, timeout_s: float) -> list[str]:
        """Subjects end in ``.p{partition}``, as the ingress names them."""
        results = []
        for message in messages:
            _, _, tail = message.subject.rpartition(".p")
            if not tail.isdigit():
                results.append(f"refused: not a partition subject: {message.subject!r}")
                continue
            headers = message.headers
            received = headers.get(HEADER_RECEIVED, "0")
            revision = headers.get(HEADER_REVISION, "0")
            item = Ingested(
                headers.get(HEADER_TRACKER) or message.msg_id,
                headers.get(HEADER_SOURCE, ""),
                message.body,
                int(received) if received.isdigit() else 0,
                asset_id=headers.get(HEADER_ASSET, ""),
                revision=int(revision) if revision.isdigit() else 0,
                replay=parse_mark(headers),
                copy=HEADER_TRACKER in headers,
            )
            partition = int(tail)
            if message.msg_id and message.msg_id in self._ids:
                results.append("")  # the stream's duplicate window (here: for ever)
                continue
            (stored,) = self.add(partition, [item])
            assert stored.seq is not None
            self.headers[(partition, stored.seq)] = (
                {"Nats-Msg-Id": message.msg_id, **headers} if message.msg_id else dict(headers)
            )
            if message.msg_id:
                self._ids[message.msg_id] = (partition, stored.seq)
            results.append("")
        return results

    async def pending(self, partition: int) -> int:
        part = self._partition(partition)
        return len(part.log) - part.acked

    async def backlog(self, partition: int) -> Backlog:
        part = self._partition(partition)
        return Backlog(len(part.log) - part.acked, part.acked)

    async def dropped(self, partition: int) -> StreamDrop | None:
        """Never: the twin has no size or age limit."""
        return None

    async def queue(self, name: str, subject: str, *, ack_wait_s: float, max_pending: int) -> Queue:
        return MemoryQueue(self._outbox, subject)

    async def source(self, partition: int) -> EventSource:
        return MemorySource(self, partition)

    def outbox(self) -> MemoryOutbox:
        return self._outbox

    async def uplinks(self) -> MemoryUplinks:
        return self.mqtt

    async def watch_config(self, changed: Callable[[], Awaitable[None]]) -> None:
        self._watchers.append(changed)

    async def config_changed(self) -> None:
        for watcher in list(self._watchers):
            await watcher()

    async def close(self) -> None:
        return None
