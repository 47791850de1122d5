"""Rendering mqtt and rabbitmq triggers into requests: endpoints, destinations, what is kept."""

from __future__ import annotations

from typing import Any

import pytest

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.requests import (
    DeliveryJob,
    MqttRequest,
    RabbitMqRequest,
    build_request,
    mqtt_endpoint,
)

SECRETS = DictSecrets({"acme": {"PW": "pa55-w0rd"}}).for_org(("acme",))
JOB = DeliveryJob("trk-1", "acme", "0001", "t", None,
                  {"metadata": {"assetId": "freezer-01", "site": "lyon"}}, "br", "a")  # fmt: skip


def build(trigger_type: str, config: dict[str, Any]) -> Any:
    trigger = Trigger.model_validate({"id": "t", "orgId": "acme", "name": "t",
                                      "triggerType": trigger_type, "config": {trigger_type: config}})  # fmt: skip
    return build_request(trigger, JOB, SECRETS)


@pytest.mark.parametrize(
    ("broker", "port", "expected"),
    [
        ("broker.example.com", 1883, ("broker.example.com", 1883, False)),
        ("broker.example.com", 8883, ("broker.example.com", 8883, True)),
        ("mqtt://broker.example.com", 1883, ("broker.example.com", 1883, False)),
        ("mqtts://broker.example.com", 1883, ("broker.example.com", 1883, True)),
        ("ssl://broker.example.com:8884", 1883, ("broker.example.com", 8884, True)),
        ("tcp://[2001:db8::1]:1884", 1883, ("2001:db8::1", 1884, False)),
        ("[2001:db8::1]", 1883, ("2001:db8::1", 1883, False)),
    ],
)
def test_mqtt_endpoint(broker: str, port: int, expected: tuple[str, int, bool]) -> None:
    assert mqtt_endpoint(broker, port) == expected


@pytest.mark.parametrize(
    ("broker", "reason"),
    [
        ("", "empty"),
        ("http://broker.example.com", "scheme 'http'"),
        ("mqtt://user:pw@broker.example.com", "holds credentials"),
        ("mqtt://:1883", "no host"),
    ],
)
def test_mqtt_endpoint_refusals(broker: str, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        mqtt_endpoint(broker, 1883)


def test_an_mqtt_request_is_rendered_and_keeps_no_credentials() -> None:
    request = build("mqtt", {"broker": "mqtts://mq.example.com", "port": 8884, "qos": 1,
                             "topic": "sites/{{metadata.site}}/alerts", "username": "acme",
                             "password": "{{secrets.PW}}", "message": "{{metadata.assetId}}"})  # fmt: skip
    assert request == MqttRequest("mq.example.com", 8884, "sites/lyon/alerts", 1, b"freezer-01",
                                  True, "acme", "pa55-w0rd")  # fmt: skip
    assert (
        request.describe() == "MQTT mqtts://mq.example.com:8884 sites/lyon/alerts qos 1 freezer-01"
    )
    assert "pa55-w0rd" not in repr(request)


@pytest.mark.parametrize(
    ("destination", "exchange", "key"),
    [
        ({"exchange": "alerts", "routingKey": "site.{{metadata.site}}"}, "alerts", "site.lyon"),
        ({"exchange": "fanout-alerts"}, "fanout-alerts", ""),
        ({"queue": "q-{{metadata.site}}"}, "", "q-lyon"),
        ({"routingKey": "q-lyon"}, "", "q-lyon"),
        ({"queue": "q", "routingKey": "q"}, "", "q"),
        ({"exchange": "alerts", "routingKey": "k", "queue": "ignored"}, "alerts", "k"),
    ],
)
def test_rabbitmq_destinations(destination: dict[str, str], exchange: str, key: str) -> None:
    request = build("rabbitmq", {"host": "amqp.example.com", "username": "acme",
                                 "password": "{{secrets.PW}}", "message": "m", **destination})  # fmt: skip
    assert isinstance(request, RabbitMqRequest)
    assert (request.exchange, request.routing_key) == (exchange, key)
    assert request.message_id == JOB.dedup_id() and request.password == "pa55-w0rd"
    assert "pa55-w0rd" not in repr(request) + request.describe()
    assert "acme" not in request.describe()
