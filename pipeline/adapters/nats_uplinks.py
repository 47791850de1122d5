"""MQTT uplinks from nats-server's MQTT listener, for the ingress to bring into the stream.

nats-server answers a QoS 1 (or 2) PUBLISH only once it has stored the message in its own
JetStream stream ``$MQTT_msgs`` (an *interest* stream: it keeps a message while a consumer
has yet to acknowledge it). A durable consumer of ours on the uplink subjects is that
interest, so the device's PUBACK means "stored until the ingress acknowledged it": the ingress
publishes it into the event stream and only then acknowledges. Nothing is lost between the
device's acknowledgement and the event stream, and a crash in between delivers it again (the
same eventTrackerId, :func:`~eventray.pipeline.mqtt.tracker_id_of`, so the stream keeps it
once).

QoS 0 publishes are not stored: they reach the ingresses on core NATS, one of them each (a
queue group), at most once, as MQTT promises. The broker marks a message that came from a
QoS 1/2 publish with the ``Nmqtt-Pub`` header; the core path skips those (they come through
the store).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eventray.pipeline.errors import RetryableError
from eventray.pipeline.mqtt import UPLINK_SUBJECTS, parse_uplink
from eventray.pipeline.ports import Uplink, UplinkSource

__all__ = [
    "BRIDGE_DURABLE",
    "MQTT_STORE",
    "QOS0_QUEUE",
    "NatsUplinks",
    "ensure_bridge_consumer",
]

MQTT_STORE = "$MQTT_msgs"
BRIDGE_DURABLE = "eventray-mqtt-bridge"
QOS0_QUEUE = "eventray-mqtt"
_STORED = "$MQTT.msgs." + UPLINK_SUBJECTS
_QOS_HEADER = "Nmqtt-Pub"
_QOS0_BACKLOG = 10_000  # QoS 0 uplinks held for the bridge; past it they are dropped (counted)


async def ensure_bridge_consumer(js: JetStreamContext, *, ack_wait_s: float = 30.0) -> None:
    """Create the bridge's durable consumer on the broker's MQTT store (the admin does, at
    start; the ingress may only read through it).

    Raises:
        NotFoundError: the broker has not created its MQTT store yet (no MQTT login so far).
    """
    await js.add_consumer(
        MQTT_STORE,
        ConsumerConfig(
            durable_name=BRIDGE_DURABLE,
            filter_subject=_STORED,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_ack_pending=20_000,
        ),
    )


class NatsUplinks(UplinkSource):
    """The uplinks of one ingress: its share of the store's consumer and of the QoS 0 queue.

    Args:
        js: JetStream over the ingress's connection.
        nc: the same connection (for the QoS 0 subscription).
    """

    def __init__(self, js: JetStreamContext, nc: object) -> None:
        self._js = js
        self._nc = nc
        self._pull: JetStreamContext.PullSubscription | None = None
        self._qos0: asyncio.Queue[Uplink] = asyncio.Queue(maxsize=_QOS0_BACKLOG)
        self._sub: object | None = None
        self._held: dict[int, Msg] = {}
        self.store_id = ""
        self.qos0_dropped = 0
        self.foreign = 0  # stored messages on subjects that are not uplinks (never expected)

    async def start(self) -> None:
        try:
            info = await self._js.stream_info(MQTT_STORE)
            self._pull = await self._js.pull_subscribe_bind(BRIDGE_DURABLE, stream=MQTT_STORE)
        except NotFoundError as exc:
            raise RetryableError("the broker has no MQTT store (no MQTT listener?)") from exc
        except NatsError as exc:
            raise RetryableError(f"the broker's MQTT store cannot be read: {exc}") from exc
        self.store_id = f"{MQTT_STORE}@{info.created}"
        self._sub = await self._nc.subscribe(  # type: ignore[attr-defined]
            UPLINK_SUBJECTS, queue=QOS0_QUEUE, cb=self._core
        )

    async def _core(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(_QOS_HEADER, "0") != "0":
            return  # a QoS 1/2 publish: it comes through the store
        names = parse_uplink(msg.subject)
        if names is None:
            return
        try:
            self._qos0.put_nowait(Uplink(names[0], names[1], msg.data, 0))
        except asyncio.QueueFull:
            self.qos0_dropped += 1

    async def fetch(self, max_uplinks: int, *, timeout_s: float) -> list[Uplink]:
        out: list[Uplink] = []
        while not self._qos0.empty() and len(out) < max_uplinks:
            out.append(self._qos0.get_nowait())
        if len(out) >= max_uplinks or self._pull is None:
            return out
        try:
            msgs = await self._pull.fetch(
                max_uplinks - len(out), timeout=0.05 if out else timeout_s
            )
        except (NatsTimeout, TimeoutError):
            return out
        except NatsError as exc:
            raise RetryableError(f"MQTT store fetch failed: {exc}") from exc
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            names = parse_uplink(msg.subject)
            if names is None:
                self.foreign += 1
                with contextlib.suppress(NatsError):
                    await msg.ack()
                continue
            qos = int((msg.headers or {}).get(_QOS_HEADER, "1") or 1)
            self._held[seq] = msg
            out.append(Uplink(names[0], names[1], msg.data, qos, seq, self.store_id))
        return out

    async def settle(
        self, done: Sequence[Uplink], retry: Sequence[Uplink], *, delay_s: float
    ) -> None:
        try:
            for uplink in done:
                msg = self._held.pop(uplink.seq, None) if uplink.qos else None
                if msg is not None:
                    await msg.ack()
            for uplink in retry:
                msg = self._held.pop(uplink.seq, None) if uplink.qos else None
                if msg is not None:
                    await msg.nak(delay=delay_s)
        except NatsError as exc:  # unacknowledged: the store delivers them again after ack_wait
            raise RetryableError(f"MQTT store acknowledgement failed: {exc}") from exc

    async def close(self) -> None:
        for closing in (self._pull, self._sub):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.unsubscribe()  # type: ignore[attr-defined]
        self._pull = self._sub = None
        self._held.clear()
