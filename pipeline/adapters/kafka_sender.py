"""The Kafka transport of trigger deliveries: records produced with aiokafka.

One producer per bootstrap-servers string, started on first use and kept. A producer whose
background sender stopped, or whose attempt failed on the connection, timed out, or lost its
idempotence state, is stopped (in the background, so its pending records may still flush) and
started afresh by the next delivery, which resolves and checks every address again. Records
are produced with ``acks="all"`` and idempotence (the producer's own retries write no
duplicates), and an attempt waits for the acknowledgement at most the request's timeout. An
attempt that timed out may still be written after it was given up, so a retried delivery can
write the record twice: at least once, as with HTTP.

Where a delivery may connect (the egress policy) is checked for every address aiokafka
connects to, and aiokafka is only ever given checked IP addresses, never a name it would
resolve again (no check-then-use gap):

- the bootstrap hosts are resolved and checked here, and the producer bootstraps from the
  checked addresses;
- a Kafka client then connects to the brokers the cluster's metadata *advertises*, by the
  names the brokers give. Before the producer starts, a metadata request through a checked
  bootstrap address lists them, and each is resolved and checked. The producer's view of the
  cluster answers a broker's address with the checked one (``ClusterMetadata.broker_metadata``
  is where aiokafka's client reads a broker's host before it connects, for leaders and
  coordinators alike); a broker the metadata advertises later, not yet checked, has no
  address (aiokafka cannot connect to it: fail closed) until the next delivery checks it.
  If any advertised broker is refused, the delivery is refused (``DeliveryRefused``): the
  producer would write to it for the partitions it leads.

Residual risk: the guard rests on aiokafka reading a broker's host only through
``broker_metadata`` (true of aiokafka 0.14; ``tests/integration/test_kafka_trigger.py`` pins it
by advertising a name and asserting every connection went to its checked address). A checked
address is kept for the producer's life, so a broker whose name moves is followed after the
next restart (a failed attempt restarts), never before a check. What listens at an allowed
address is the policy's concern no more than for HTTP. Only plaintext is spoken (the trigger's
config has no TLS or SASL settings); with TLS, the certificate must be checked against the
broker's name, not the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn, get_ip_port_afi
from aiokafka.protocol.metadata import MetadataRequest

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy, EgressRefused
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.models.trigger import kafka_topic_problem
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import KafkaRequest

__all__ = ["KafkaSender"]

_CLIENT_ID = "eventray-trigger"

_PERMANENT: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
)
"""Failures the same record to the same topic meets again on every try."""

_BREAKS_PRODUCER: tuple[type[Exception], ...] = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.ProducerClosed,
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.UnknownProducerId,
    kafka_errors.InvalidProducerEpoch,
    kafka_errors.ProducerFenced,
    TimeoutError,
)
"""Failures after which the producer is replaced (fresh connections, lookups, producer id)."""

_TOPIC_OK = {
    kafka_errors.NoError.errno,
    kafka_errors.LeaderNotAvailableError.errno,  # just created (auto-create): the send waits
}


@dataclass(eq=False)
class _Kept:
    """A started producer and the checked address of every broker name it may connect to."""

    producer: Any
    timeout_s: float
    addresses: dict[str, str] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)


class KafkaSender:
    """Sends :class:`KafkaRequest`s.

    Args:
        policy: where deliveries may connect (default: public addresses only).
        idempotent: produce with ``enable_idempotence`` (the default). A broker that does not
            grant a producer id (aiokafka asks with InitProducerId v0) fails every attempt;
            only such a broker needs ``False`` (``acks="all"`` is kept).
    """

    def __init__(self, *, policy: EgressPolicy | None = None, idempotent: bool = True) -> None:
        self.policy = policy or EgressPolicy()
        self.idempotent = idempotent
        self.starts = 0
        self._kept: dict[str, _Kept] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # per cluster: one slow to start stalls no other
        self._stopping: set[asyncio.Task[None]] = set()

    async def __call__(self, request: KafkaRequest) -> SendResult:
        problem = kafka_topic_problem(request.topic)
        if problem is not None:
            raise DeliveryRefused(problem)
        kept = await self._producer(request)
        try:
            await self._check_brokers(kept, _advertised(kept.producer.client.cluster.brokers()))
            if request.topic not in kept.topics:
                await self._check_topic(kept, request)
            async with asyncio.timeout(request.timeout_s):  # no task per send, as wait_for
                metadata = await kept.producer.send_and_wait(
                    request.topic, request.value, key=request.key
                )
        except DeliveryRefused:
            self._discard(request.bootstrap_servers, kept)
            raise
        except PermanentError:
            raise
        except RetryableError:
            self._discard(request.bootstrap_servers, kept)
            raise
        except (kafka_errors.KafkaError, TimeoutError) as exc:
            if isinstance(exc, _BREAKS_PRODUCER) or self._broken(kept):
                self._discard(request.bootstrap_servers, kept)
            raise _translated(exc, f"Kafka produce to {request.topic!r}") from exc
        return SendResult(200, f"{metadata.topic}[{metadata.partition}]@{metadata.offset}")

    async def _producer(self, request: KafkaRequest) -> _Kept:
        async with self._locks.setdefault(request.bootstrap_servers, asyncio.Lock()):
            kept = self._kept.get(request.bootstrap_servers)
            if kept is not None and not self._broken(kept):
                return kept
            if kept is not None:
                self._discard(request.bootstrap_servers, kept)
            kept = await self._start(request)
            self._kept[request.bootstrap_servers] = kept
            return kept

    async def _start(self, request: KafkaRequest) -> _Kept:
        bootstrap = await self._checked_bootstrap(request.bootstrap_servers)
        timeout_ms = max(1000, round(request.timeout_s * 1000))
        kept = _Kept(None, timeout_ms / 1000)
        await self._check_brokers(kept, await _advertised_by(bootstrap, timeout_ms))
        producer = AIOKafkaProducer(
            bootstrap_servers=[_joined(host, port) for host, port in bootstrap],
            client_id=_CLIENT_ID,
            acks="all",
            enable_idempotence=self.idempotent,
            request_timeout_ms=timeout_ms,
        )
        kept.producer = producer
        _guard(producer, kept)
        try:
            await asyncio.wait_for(producer.start(), request.timeout_s)
        except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
            self._stop_later(producer, kept.timeout_s)
            raise _translated(exc, f"Kafka producer for {request.bootstrap_servers!r}") from exc
        self.starts += 1
        return kept

    async def _checked_bootstrap(self, servers: str) -> list[tuple[str, int]]:
        """Every allowed address of every bootstrap host, as ``(ip, port)``."""
        entries: list[tuple[str, int]] = []
        for entry in (s.strip() for s in servers.split(",")):
            try:
                host, port, _ = get_ip_port_afi(entry)
            except ValueError:
                host, port = "", 0
            if not host or not 0 < port < 65536:
                raise PermanentError(f"Kafka bootstrap server {entry!r} is not host[:port]")
            entries.append((host, port))
        out: list[tuple[str, int]] = []
        for host, port in entries:
            for address in await self._resolve("Kafka bootstrap server", host, port):
                if (address, port) not in out:
                    out.append((address, port))
        return out

    async def _check_brokers(self, kept: _Kept, brokers: list[tuple[str, int]]) -> None:
        """Resolve and check every advertised broker name not checked yet for ``kept``.

        Raises:
            DeliveryRefused: one of them is refused by the egress policy.
            RetryableError: one of them does not resolve.
        """
        for host, port in brokers:
            if host not in kept.addresses:
                addresses = await self._resolve("Kafka broker (advertised)", host, port)
                kept.addresses[host] = addresses[0]

    async def _resolve(self, target: str, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            literal = False
        else:
            literal = True
        try:
            if literal:  # no lookup to wait for
                return self.policy.check(target, host, port, [host])
            return await asyncio.to_thread(self.policy.resolve, target, host, port)
        except EgressRefused as exc:
            raise DeliveryRefused(str(exc)) from None
        except OSError as exc:
            raise RetryableError(f"{target} {host!r} does not resolve: {exc}") from exc

    async def _check_topic(self, kept: _Kept, request: KafkaRequest) -> None:
        """Ask the cluster about a topic this producer has not written to yet: a topic that
        does not exist and is not created by the broker (auto-create off), or that the
        credentials may not write, fails permanently instead of waiting out the timeout."""
        client = kept.producer.client
        node = client.get_random_node()
        if node is None:
            raise RetryableError("Kafka cluster metadata lists no broker")
        response = await asyncio.wait_for(
            client.send(node, MetadataRequest([request.topic])), request.timeout_s
        )
        await self._check_brokers(kept, _advertised(response.brokers))
        for topic in response.topics:
            code, name = topic[0], topic[1]
            if name != request.topic or code in _TOPIC_OK:
                continue
            error = kafka_errors.for_code(code)
            if error is kafka_errors.UnknownTopicOrPartitionError:
                raise PermanentError(
                    f"Kafka topic {request.topic!r} does not exist and the broker does not "
                    "create topics on use"
                )
            raise _translated(error(), f"Kafka topic {request.topic!r}")
        kept.topics.add(request.topic)

    @staticmethod
    def _broken(kept: _Kept) -> bool:
        producer = kept.producer
        task = getattr(getattr(producer, "_sender", None), "sender_task", None)
        return bool(getattr(producer, "_closed", False)) or (task is not None and task.done())

    def _discard(self, servers: str, kept: _Kept) -> None:
        """Forget ``kept`` (if it is still the kept one) and stop it in the background, its
        unsent records dropped: their deliveries failed and will be retried on a new
        producer, so the old one must not write them late (twice, and out of order)."""
        if self._kept.get(servers) is kept:
            del self._kept[servers]
            self._stop_later(kept.producer, kept.timeout_s, flush=False)

    def _stop_later(self, producer: Any, timeout_s: float, *, flush: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(_stop(producer, timeout_s, flush))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for kept in self._kept.values():
            self._stop_later(kept.producer, kept.timeout_s, flush=True)
        self._kept.clear()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)


async def _stop(producer: Any, timeout_s: float, flush: bool) -> None:
    """Stop ``producer``; with ``flush``, its pending records are sent first if the cluster
    answers (within a request timeout), without, they fail at once and nothing more is sent."""
    with contextlib.suppress(Exception):
        if not flush:
            await _drop_pending(producer)
        await asyncio.wait_for(producer.stop(), timeout_s + 1)


async def _drop_pending(producer: Any) -> None:
    """Fail the records ``producer`` has not sent, and send nothing more.

    aiokafka 0.14 has no stop without a flush: its background sender is stopped (a cancelled
    one fails nothing), then what its accumulator still holds is failed, and those failures
    are marked seen (the deliveries that waited on them have given up already)."""
    await producer._sender.close()
    accumulator = producer._message_accumulator
    batches = [b for queue in accumulator._batches.values() for b in queue]
    batches += list(accumulator._pending_batches)
    accumulator.fail_all(kafka_errors.KafkaConnectionError("producer dropped after a failure"))
    for batch in batches:
        futures = [batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)]
        for future in futures:
            if future.done() and not future.cancelled():
                future.exception()


def _guard(producer: Any, kept: _Kept) -> None:
    """Make ``producer`` connect to brokers only by the addresses checked in ``kept``."""
    cluster = producer.client.cluster
    lookup = cluster.broker_metadata

    def broker_metadata(node_id: Any) -> Any:
        broker = lookup(node_id)
        if broker is None:
            return None
        address = kept.addresses.get(broker.host)
        return None if address is None else broker._replace(host=address)

    cluster.broker_metadata = broker_metadata


def _advertised(brokers: Any) -> list[tuple[str, int]]:
    """``(host, port)`` of broker entries (``BrokerMetadata`` or a metadata response's
    ``(node_id, host, port[, rack])``)."""
    return [(str(broker[1]), int(broker[2])) for broker in brokers]


async def _advertised_by(
    bootstrap: list[tuple[str, int]], timeout_ms: int
) -> list[tuple[str, int]]:
    """The brokers the cluster advertises, asked through the first checked bootstrap address
    that answers (a connection to an IP address: nothing resolved).

    Raises:
        RetryableError: none answered.
    """
    failures: list[str] = []
    for host, port in bootstrap:
        conn = None
        try:
            conn = await create_conn(
                host, port, client_id=_CLIENT_ID, request_timeout_ms=timeout_ms
            )
            response = await conn.send(MetadataRequest([]))
        except (kafka_errors.KafkaError, OSError, TimeoutError) as exc:
            failures.append(f"{_joined(host, port)}: {type(exc).__name__}")
            continue
        finally:
            if conn is not None:
                conn.close()
        return _advertised(response.brokers)
    raise RetryableError(f"Kafka bootstrap servers unreachable ({', '.join(failures)})")


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _translated(exc: BaseException, what: str) -> PermanentError | RetryableError:
    """The platform's error for an aiokafka (or timeout) failure."""
    if isinstance(exc, TimeoutError):
        return RetryableError(f"{what}: no acknowledgement in time")
    if isinstance(exc, _PERMANENT):
        return PermanentError(f"{what}: {type(exc).__name__}: {exc}")
    return RetryableError(f"{what}: {type(exc).__name__}: {exc}")
