"""What the stream keeps, and noticing when its limits dropped events no lane had taken.

The stream uses *limits* retention with *discard old*: it keeps messages after they are
acknowledged (a replay window), up to a size and an age, and makes room by dropping its oldest
messages. The alternatives were worse for an ingest path: ``discard new`` would refuse every
publish once the window is full of *processed* messages (an outage until they age out), and
work-queue or interest retention delete a message once acknowledged, so nothing could be
replayed. The price: when more is waiting than the cap holds (lanes down or far behind), the
oldest *unprocessed* messages are dropped too. JetStream does so silently (a consumer just
skips to what is left), so :class:`DropWatch` notices it.
"""

from __future__ import annotations

from nats.js.api import ConsumerInfo, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eventray.pipeline.ports import StreamDrop

__all__ = ["DropWatch", "describe_limits", "limits_changed"]


class DropWatch:
    """Notices events of one partition the stream dropped before its consumer took them.

    Why it needs memory: once dropped, a message leaves no trace. The consumer skips to what
    is left, and its ack floor even moves past dropped messages it had delivered. Nor is "the
    stream's first sequence is past the consumer's position" a proof: an idle partition has no
    message there to lose. So each check notes the oldest message of the partition not yet
    delivered to its consumer; if a later check finds that message gone from the stream and
    still not delivered, the stream dropped it, and with it every undelivered message of the
    partition below the stream's first sequence. A drop is missed only if messages arrive and
    are dropped between two checks, which needs the whole window to turn over in that time.

    Args:
        partition: the partition (for the report).
        subject: its subject.
        durable: its consumer.
    """

    def __init__(self, partition: int, *, subject: str, durable: str) -> None:
        self.partition = partition
        self.subject = subject
        self.durable = durable
        self._oldest = 0  # the oldest undelivered message the last check saw (0: none)

    async def check(self, js: JetStreamContext, stream: str) -> StreamDrop | None:
        """The drop since the last check, if any.

        Raises:
            nats.errors.Error: the server did not answer (the caller decides).
        """
        info = await js.consumer_info(stream, self.durable)
        taken = _taken(info)
        drop = None
        if self._oldest > taken:
            state = (await js.stream_info(stream)).state
            if self._oldest < state.first_seq:
                drop = StreamDrop(self.partition, self._oldest, state.first_seq - 1)
        self._oldest = 0
        if info.num_pending:
            try:
                message = await js.get_msg(stream, seq=taken + 1, subject=self.subject, next=True)
            except NotFoundError:  # dropped since the consumer info was read: the next check
                pass
            else:
                self._oldest = int(message.seq or 0)
        return drop


def _taken(info: ConsumerInfo) -> int:
    """The stream sequence up to which the consumer has taken its messages."""
    delivered = info.delivered.stream_seq if info.delivered is not None else 0
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    return max(int(delivered or 0), int(floor or 0))


def describe_limits(config: StreamConfig) -> str:
    """``max_bytes 8 GiB, max_age 72 h, discard old`` (for logs)."""
    size = config.max_bytes
    age = config.max_age
    size_text = "unlimited" if size is None or size < 0 else _bytes(size)
    age_text = "none" if not age else f"{age / 3600:g} h"
    discard = str(getattr(config.discard, "value", config.discard) or "old")  # a str when read
    return f"max_bytes {size_text}, max_age {age_text}, discard {discard}"


def limits_changed(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether updating ``current`` to ``wanted`` changes what the stream keeps."""
    return describe_limits(current) != describe_limits(wanted)


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"
