"""The JetStream stream as an archive: what redrives and replays read and append.

- **Reading a range** uses an ephemeral pull consumer on the partition's subject, positioned by
  start time (``DeliverPolicy.BY_START_TIME``) or by sequence, with no acknowledgements (it
  changes nothing for the lanes' durable consumers) and an inactivity threshold, so a reader
  that dies leaves nothing behind for long. It is deleted when the read ends.
- **One message** by sequence: the stream's ``MSG.GET``.
- **Appending** goes over the bus's pull connection in one write per call, like the ingress's
  appends, and reads each acknowledgement's sequence and ``duplicate`` flag (a message id the
  stream saw inside its duplicate window is stored once: the answer names the first copy).
- **Progress**: a partition's durable consumer's acknowledgement floor.

The caller needs the stack's admin credentials (it publishes into partitions and creates
consumers; see :mod:`eventray.cluster.roles`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import orjson
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from eventray.pipeline.adapters.nats_bus import BusError, JetStreamBus, partition_durable
from eventray.pipeline.adapters.nats_wire import WireError, header_block
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.replay.ports import Appended, EventArchive, StoredMessage, SubjectBounds

__all__ = ["JetStreamArchive"]

_FETCH_TIMEOUT_S = 2.0
_INACTIVE_S = 60.0


def _ms(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class JetStreamArchive(EventArchive):
    """Args:
    bus: a connected bus with the admin's credentials.
    """

    def __init__(self, bus: JetStreamBus) -> None:
        self._bus = bus

    async def bounds(self, subject: str) -> SubjectBounds:
        js, stream = self._bus.js, self._bus.stream
        try:
            state = (await js.stream_info(stream)).state
            dropped = int(state.first_seq or 0) > 1
            try:
                first = await js.get_msg(
                    stream, seq=max(1, int(state.first_seq or 1)), subject=subject, next=True
                )
            except NotFoundError:
                return SubjectBounds(0, 0, 0, dropped)
            last = await js.get_last_msg(stream, subject)
        except NatsError as exc:
            raise BusError(f"cannot read stream {stream}: {exc}") from exc
        return SubjectBounds(int(first.seq or 0), _ms(first.time), int(last.seq or 0), dropped)

    async def read(
        self,
        subject: str,
        *,
        start_ms: int | None = None,
        start_seq: int | None = None,
        end_seq: int,
        batch: int = 1000,
    ) -> AsyncIterator[list[StoredMessage]]:
        js, stream = self._bus.js, self._bus.stream
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        if start_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(1, start_seq)
        elif start_ms is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.fromtimestamp(max(0, start_ms) / 1000, UTC)
        else:
            config.deliver_policy = DeliverPolicy.ALL
        try:
            sub = await js.pull_subscribe(
                subject, stream=stream, config=config,
                # nats-py appends the id to the prefix as is: the dot keeps the reply subject
                # under the role's inbox (``_INBOX.replay.<id>``), which its user may hear
                inbox_prefix=(self._bus.inbox_prefix + ".").encode(),
            )  # fmt: skip
        except NatsError as exc:
            raise BusError(f"cannot read {subject} from stream {stream}: {exc}") from exc
        try:
            while True:
                try:
                    messages = await sub.fetch(batch, timeout=_FETCH_TIMEOUT_S)
                except (NatsTimeoutError, TimeoutError):
                    return  # nothing more
                chunk: list[StoredMessage] = []
                done = False
                for msg in messages:
                    meta = msg.metadata
                    if meta.sequence.stream >= end_seq:
                        done = True
                        break
                    chunk.append(
                        StoredMessage(
                            meta.sequence.stream, msg.subject, _ms(meta.timestamp),
                            dict(msg.headers or {}), msg.data,
                        )
                    )  # fmt: skip
                    done = meta.num_pending == 0
                if chunk:
                    yield chunk
                if done or not messages:
                    return
        except NatsError as exc:
            raise BusError(f"reading {subject} from stream {stream} failed: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):  # else it goes after its inactive threshold
                name = (await sub.consumer_info()).name
                await js.delete_consumer(stream, name)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def get(self, subject: str, seq: int) -> StoredMessage | None:
        js, stream = self._bus.js, self._bus.stream
        try:
            found = await js.get_msg(stream, seq=seq)
        except NotFoundError:
            return None
        except NatsError as exc:
            raise BusError(f"cannot read message {seq} of stream {stream}: {exc}") from exc
        return StoredMessage(
            int(found.seq or seq), found.subject or "", _ms(found.time),
            dict(found.headers or {}), found.data or b"",
        )  # fmt: skip

    async def append(self, messages: Sequence[OutboxMessage]) -> list[Appended]:
        if not messages:
            return []
        bus = self._bus
        wire = await bus.wire()
        answers: list[Appended | None] = [None] * len(messages)
        sendable: list[tuple[str, bytes, bytes]] = []
        positions: list[int] = []
        for index, message in enumerate(messages):
            try:
                headers = header_block({"Nats-Msg-Id": message.msg_id, **message.headers})
            except ValueError as exc:
                answers[index] = Appended(0, False, f"refused: {exc}")
                continue
            if len(headers) + len(message.body) > wire.max_payload:
                answers[index] = Appended(
                    0, False, f"refused: {len(message.body):,} bytes exceed the stream's limit"
                )
                continue
            sendable.append((message.subject, headers, message.body))
            positions.append(index)
        if sendable:
            try:
                replies = await wire.request_many(sendable, timeout_s=10.0)
            except WireError as exc:
                raise BusError(f"the stream did not acknowledge: {exc}") from exc
            for index, reply in zip(positions, replies, strict=True):
                answers[index] = _answer(reply.status, reply.payload)
        return [a if a is not None else Appended(0, False, "no answer") for a in answers]

    async def acknowledged(self, partition: int) -> int:
        js, stream = self._bus.js, self._bus.stream
        try:
            info = await js.consumer_info(stream, partition_durable(partition))
        except NotFoundError:
            return 0
        except NatsError as exc:
            raise BusError(f"no consumer for partition {partition}: {exc}") from exc
        return int(info.ack_floor.stream_seq or 0) if info.ack_floor is not None else 0


def _answer(status: int, payload: bytes) -> Appended:
    if status:  # 503: no stream listens on the subject
        return Appended(0, False, f"no stream stored it (status {status})")
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Appended(0, False, f"unexpected answer {payload[:80]!r}")
    if not isinstance(answer, dict):
        return Appended(0, False, f"unexpected answer {payload[:80]!r}")
    error = answer.get("error")
    if error:
        text = error.get("description", error) if isinstance(error, dict) else error
        return Appended(0, False, str(text))
    return Appended(int(answer.get("seq", 0)), bool(answer.get("duplicate", False)))
