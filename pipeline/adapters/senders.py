"""One sender for every trigger transport: hands each request to the adapter of its kind."""

from __future__ import annotations

from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.kafka_sender import KafkaSender
from eventray.pipeline.adapters.mqtt_sender import MqttSender
from eventray.pipeline.adapters.nats_sender import NatsSender
from eventray.pipeline.adapters.rabbitmq_sender import RabbitMqSender
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.adapters.websocket_sender import WebSocketSender
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import (
    EmailRequest,
    KafkaRequest,
    MqttRequest,
    NatsRequest,
    RabbitMqRequest,
    Request,
    WebSocketRequest,
)

__all__ = ["TriggerSenders"]


class TriggerSenders:
    """The :data:`~pipeline.triggers.delivery.Sender` the trigger dispatcher uses.

    The senders not given are made with the HTTP sender's egress policy.
    """

    def __init__(
        self,
        *,
        http: AiohttpSender,
        smtp: SmtpSender,
        nats: NatsSender | None = None,
        mqtt: MqttSender | None = None,
        rabbitmq: RabbitMqSender | None = None,
        kafka: KafkaSender | None = None,
    ) -> None:
        self.http = http
        self.smtp = smtp
        self.nats = nats or NatsSender(policy=http.policy)
        self.mqtt = mqtt or MqttSender(policy=http.policy)
        self.rabbitmq = rabbitmq or RabbitMqSender(policy=http.policy)
        self.websocket = WebSocketSender(http)
        self.kafka = kafka or KafkaSender(policy=http.policy)

    async def __call__(self, request: Request) -> SendResult:
        if isinstance(request, EmailRequest):
            return await self.smtp(request)
        if isinstance(request, NatsRequest):
            return await self.nats(request)
        if isinstance(request, WebSocketRequest):
            return await self.websocket(request)
        if isinstance(request, MqttRequest):
            return await self.mqtt(request)
        if isinstance(request, RabbitMqRequest):
            return await self.rabbitmq(request)
        if isinstance(request, KafkaRequest):
            return await self.kafka(request)
        return await self.http(request)

    async def close(self) -> None:
        await self.websocket.close()
        await self.http.close()
        await self.smtp.close()
        await self.nats.close()
        await self.mqtt.close()
        await self.rabbitmq.close()
        await self.kafka.close()
