"""Triggers: configured Exec action targets. Strings may hold ``{{path}}`` placeholders."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from eventray.pipeline.models.base import Entity, Model
from eventray.pipeline.models.routing import RESERVED_SUBJECTS

__all__ = [
    "EmailConfig",
    "HttpConfig",
    "KafkaConfig",
    "MqttConfig",
    "NatsConfig",
    "RabbitMqConfig",
    "SlackConfig",
    "TeamsConfig",
    "Trigger",
    "TriggerConfig",
    "TriggerType",
    "WebSocketConfig",
    "kafka_topic_problem",
    "mqtt_topic_problem",
]

TriggerType = Literal[
    "http", "slack", "teams", "email", "nats", "mqtt", "rabbitmq", "websocket", "kafka"
]


class HttpConfig(Model):
    endpoint: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | dict[str, object] | None = None
    timeout_ms: int = Field(default=5000, gt=0)


class SlackConfig(Model):
    webhook_url: str
    channel: str | None = None
    username: str | None = None
    message: str


class TeamsConfig(Model):
    """A Microsoft Teams incoming webhook.

    ``format`` is the body posted: ``adaptiveCard`` (a message with one Adaptive Card, what the
    Workflows webhooks of Power Automate take) or ``messageCard`` (the legacy Office 365
    connector card of ``*.webhook.office.com`` URLs). ``auto`` chooses by the rendered URL and
    falls back to the Adaptive Card, since Microsoft is retiring the connectors.
    """

    webhook_url: str
    title: str
    text: str
    format: Literal["auto", "adaptiveCard", "messageCard"] = "auto"


class EmailConfig(Model):
    smtp_host: str
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    username: str | None = None
    password: str | None = None
    from_addr: str
    to: list[str] | str
    cc: list[str] | str | None = None
    subject: str
    body: str | None = None
    html_body: str | None = None


class NatsConfig(Model):
    server: str
    subject: str
    message: str

    @field_validator("subject")
    @classmethod
    def _tenant_subject(cls, subject: str) -> str:
        # Refused at load when it is plain text; a rendered one is checked again at delivery.
        if subject.startswith(RESERVED_SUBJECTS):
            raise ValueError(f"{subject!r} is reserved for the platform (subjects starting "
                             f"with {', '.join(RESERVED_SUBJECTS)})")  # fmt: skip
        return subject


def mqtt_topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (``None`` if it can): MQTT refuses an empty topic
    and one with the wildcards ``+``/``#`` (they are for subscriptions), or with a NUL."""
    if not topic:
        return "is empty"
    if "+" in topic or "#" in topic:
        return "holds a wildcard (+ or #), which only subscriptions may use"
    if "\0" in topic:
        return "holds a NUL character"
    if len(topic.encode()) > 65535:
        return "is longer than 65535 bytes"
    return None


class MqttConfig(Model):
    """An MQTT broker to publish to.

    ``broker`` is a host name or address, or a URL: ``mqtt://host[:port]`` (``tcp://``) or,
    over TLS, ``mqtts://host[:port]`` (``ssl://``); a port in the URL wins over ``port``, and a
    bare host on port 8883 (MQTT's TLS port) is reached over TLS.
    """

    broker: str
    port: int = Field(default=1883, gt=0, lt=65536)
    topic: str
    qos: Literal[0, 1, 2] = 0
    username: str | None = None
    password: str | None = None
    message: str

    @field_validator("topic")
    @classmethod
    def _publishable_topic(cls, topic: str) -> str:
        # A placeholder cannot add a wildcard here; what it renders is checked at delivery.
        problem = mqtt_topic_problem(topic)
        if problem is not None:
            raise ValueError(f"MQTT topic {topic!r} {problem}")
        return topic


class RabbitMqConfig(Model):
    """A RabbitMQ (AMQP 0-9-1) broker to publish to.

    ``exchange`` (with ``routingKey``, default empty) publishes to that exchange; without an
    exchange the message goes through the default exchange to the queue named by ``queue``
    (or by ``routingKey``). eventray declares nothing on the tenant's broker: the exchange or
    queue must exist, and a message no queue takes is a failed delivery.
    """

    host: str
    port: int = Field(default=5672, gt=0, lt=65536)
    vhost: str = "/"
    username: str
    password: str
    exchange: str | None = None
    routing_key: str | None = None
    queue: str | None = None
    message: str

    @model_validator(mode="after")
    def _one_destination(self) -> RabbitMqConfig:
        if self.exchange:
            return self
        if not self.queue and not self.routing_key:
            raise ValueError("rabbitmq needs an exchange (with a routingKey) or a queue")
        if self.queue and self.routing_key and self.queue != self.routing_key:
            raise ValueError(
                "without an exchange, queue and routingKey both name the queue of the default "
                f"exchange: {self.queue!r} and {self.routing_key!r} disagree"
            )
        return self


class WebSocketConfig(Model):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    message: str


_KAFKA_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_PLACEHOLDERS = re.compile(r"\{\{.*?\}\}")


def kafka_topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a Kafka topic name (``[a-zA-Z0-9._-]{1,249}``, not ``.`` or
    ``..``), or ``None`` if it is one."""
    if topic in (".", ".."):
        return f"Kafka topic {topic!r} is not allowed ('.' and '..' are refused by Kafka)"
    if _KAFKA_TOPIC.fullmatch(topic) is None:
        return (
            f"Kafka topic {topic!r} is not 1 to 249 of the characters a-z A-Z 0-9 . _ - "
            f"({len(topic)} characters)"
        )
    return None


class KafkaConfig(Model):
    bootstrap_servers: str
    topic: str
    key: str | None = None
    message: str

    @field_validator("topic")
    @classmethod
    def _kafka_topic(cls, topic: str) -> str:
        # Plain text is checked whole at load; with placeholders, the text around them is
        # checked here and the rendered topic again at delivery.
        literal = _PLACEHOLDERS.sub("", topic)
        if "{{" not in topic:
            problem = kafka_topic_problem(topic)
        elif literal and _KAFKA_TOPIC.fullmatch(literal) is None:
            problem = f"Kafka topic {topic!r} has characters outside a-z A-Z 0-9 . _ -"
        else:
            problem = None
        if problem is not None:
            raise ValueError(problem)
        return topic


class TriggerConfig(Model):
    """``config: {<triggerType>: {...}}``: exactly the key named by ``triggerType`` is set."""

    http: HttpConfig | None = None
    slack: SlackConfig | None = None
    teams: TeamsConfig | None = None
    email: EmailConfig | None = None
    nats: NatsConfig | None = None
    mqtt: MqttConfig | None = None
    rabbitmq: RabbitMqConfig | None = None
    websocket: WebSocketConfig | None = None
    kafka: KafkaConfig | None = None


class Trigger(Entity):
    """A delivery target owned by one organization.

    ``shared: true`` lets route groups and rules of the owner's descendants dispatch it (as a
    shared template or rule is inherited); without it only the owner's own may, so one
    tenant's configuration can never send events through, or spend the secrets of, another's.
    """

    kind: Literal["Trigger"] = "Trigger"
    org_id: str
    name: str
    enabled: bool = True
    shared: bool = False
    trigger_type: TriggerType
    config: TriggerConfig

    @field_validator("config")
    @classmethod
    def _config_matches_type(cls, config: TriggerConfig, info: ValidationInfo) -> TriggerConfig:
        # A field validator (not a model validator) so the error's path is ``config``.
        trigger_type = info.data.get("trigger_type")
        given = [name for name, value in config if value is not None]
        if trigger_type is not None and given != [trigger_type]:
            raise ValueError(
                f"config must hold exactly the key {trigger_type!r} "
                f"(triggerType), found {given or 'none'}"
            )
        return config

    def settings(self) -> Model:
        """The config block for this trigger's type."""
        value = getattr(self.config, self.trigger_type)
        assert isinstance(value, Model)
        return value
