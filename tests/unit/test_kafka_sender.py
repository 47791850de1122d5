"""The Kafka sender's decisions without a broker: request rendering, the reading of aiokafka's
errors, the topic check's answers (auto-create off, authorization), bootstrap parsing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import errors as kafka_errors

from eventray.pipeline.adapters.egress import DeliveryRefused, EgressPolicy
from eventray.pipeline.adapters.kafka_sender import KafkaSender, _Kept, _translated
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.requests import DeliveryJob, KafkaRequest, build_request


def kafka_trigger(**config: Any) -> Trigger:
    block = {"bootstrapServers": "kafka.example.com:9092", "topic": "alerts",
             "message": "{{metadata.assetId}} at {{event.data.t}} C", **config}  # fmt: skip
    return Trigger.model_validate({"id": "k", "orgId": "acme", "name": "k",
                                   "triggerType": "kafka", "config": {"kafka": block}})  # fmt: skip


JOB = DeliveryJob("trk-1", "acme", "0001", "k", None,
                  {"event": {"data": {"t": -12}}, "metadata": {"assetId": "freezer-01"}})  # fmt: skip


def test_the_request_is_rendered_with_its_key() -> None:
    trig = kafka_trigger(topic="alerts.{{metadata.assetId}}", key="{{metadata.assetId}}",
                         bootstrapServers="{{secrets.KAFKA}}")  # fmt: skip
    secrets = DictSecrets({"acme": {"KAFKA": "b1.example.com:9092,b2.example.com:9093"}})
    request = build_request(trig, JOB, secrets.for_org(["acme"]))
    assert request == KafkaRequest("b1.example.com:9092,b2.example.com:9093",
                                   "alerts.freezer-01", b"freezer-01 at -12 C", b"freezer-01")  # fmt: skip
    assert request.describe() == (
        "KAFKA b1.example.com:9092,b2.example.com:9093 alerts.freezer-01 key='freezer-01' "
        "freezer-01 at -12 C"
    )
    keyless = build_request(kafka_trigger(), JOB, None)
    assert isinstance(keyless, KafkaRequest) and keyless.key is None
    assert keyless.describe() == "KAFKA kafka.example.com:9092 alerts freezer-01 at -12 C"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (kafka_errors.NotLeaderForPartitionError(), RetryableError),
        (kafka_errors.KafkaTimeoutError(), RetryableError),
        (kafka_errors.KafkaConnectionError(), RetryableError),
        (kafka_errors.RequestTimedOutError(), RetryableError),
        (kafka_errors.NotEnoughReplicasError(), RetryableError),
        (TimeoutError(), RetryableError),
        (kafka_errors.MessageSizeTooLargeError(), PermanentError),
        (kafka_errors.TopicAuthorizationFailedError(), PermanentError),
        (kafka_errors.ClusterAuthorizationFailedError(), PermanentError),
        (kafka_errors.UnknownTopicOrPartitionError(), PermanentError),
        (kafka_errors.InvalidTopicError(), PermanentError),
    ],
)
def test_aiokafka_errors_are_read_as_retryable_or_permanent(error: Exception, kind: type) -> None:
    translated = _translated(error, "Kafka produce to 't'")
    assert type(translated) is kind
    assert str(translated).startswith("Kafka produce to 't': ")


class FakeClient:
    """A producer's client that answers the topic check's metadata request."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.asked: list[Any] = []

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        self.asked.append(request)
        return SimpleNamespace(brokers=[(1, "93.184.216.34", 9092, None)],
                               topics=[(self.code, "alerts", False, [])])  # fmt: skip


def check_topic(code: int) -> tuple[_Kept, FakeClient]:
    client = FakeClient(code)
    kept = _Kept(SimpleNamespace(client=client), 1.0)
    sender = KafkaSender()
    asyncio.run(sender._check_topic(kept, KafkaRequest("b:9092", "alerts", b"v")))
    return kept, client


def test_a_topic_the_broker_does_not_create_fails_permanently() -> None:
    with pytest.raises(PermanentError, match="does not exist and the broker does not create"):
        check_topic(kafka_errors.UnknownTopicOrPartitionError.errno)


def test_a_topic_that_may_not_be_written_fails_permanently() -> None:
    with pytest.raises(PermanentError, match="TopicAuthorizationFailedError"):
        check_topic(kafka_errors.TopicAuthorizationFailedError.errno)


@pytest.mark.parametrize("error", [kafka_errors.NoError, kafka_errors.LeaderNotAvailableError])
def test_an_existing_or_just_created_topic_is_checked_once(error: Any) -> None:
    kept, client = check_topic(error.errno)
    assert kept.topics == {"alerts"} and len(client.asked) == 1
    assert kept.addresses == {"93.184.216.34": "93.184.216.34"}  # the brokers it names are checked


def test_a_broker_the_topic_check_names_is_checked_too() -> None:
    client = FakeClient(0)

    async def send(node: int, request: Any) -> Any:
        return SimpleNamespace(brokers=[(2, "10.0.0.5", 9092, None)], topics=[])

    client.send = send  # type: ignore[method-assign]
    kept = _Kept(SimpleNamespace(client=client), 1.0)
    with pytest.raises(
        DeliveryRefused, match=r"10\.0\.0\.5:9092 resolves to 10\.0\.0\.5, a private"
    ):
        asyncio.run(KafkaSender()._check_topic(kept, KafkaRequest("b:9092", "alerts", b"v")))


@pytest.mark.parametrize("servers", ["b:x", "b:0", "b:70000", "", "b1:9092,,b2:9092"])
def test_bootstrap_servers_that_are_not_host_port_fail_permanently(servers: str) -> None:
    with pytest.raises(PermanentError, match="is not host\\[:port\\]"):
        asyncio.run(KafkaSender()._checked_bootstrap(servers))


def test_bootstrap_addresses_are_checked_and_kept_in_order() -> None:
    sender = KafkaSender(policy=EgressPolicy.allowing(["127.0.0.1/32", "::1/128"]))
    checked = asyncio.run(sender._checked_bootstrap("127.0.0.1:9092, [::1]:9093,127.0.0.1"))
    assert checked == [("127.0.0.1", 9092), ("::1", 9093)]
    with pytest.raises(DeliveryRefused, match=r"Kafka bootstrap server 10\.1\.2\.3:9092 resolves"):
        asyncio.run(KafkaSender()._checked_bootstrap("93.184.216.35:9092,10.1.2.3:9092"))
