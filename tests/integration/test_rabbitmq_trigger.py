"""Triggers of type ``rabbitmq`` against the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest).

No wheel ships a RabbitMQ broker, so these tests run where one is installed and skip elsewhere.
Each test declares its own temporary queue (exclusive, deleted with the test's connection):
the sender itself never declares anything.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.rabbitmq_sender import RabbitMqSender
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome, Sender
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # a connection.start frame
    except OSError:
        return False


pytestmark = pytest.mark.services
needs_rabbitmq = pytest.mark.skipif(
    not _rabbitmq_answers(), reason="no RabbitMQ on 127.0.0.1:5672; a wheel cannot provide one"
)

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])


def trigger(trigger_id: str = "mq", **destination: str) -> Trigger:
    return Trigger.model_validate({
        "id": trigger_id, "orgId": "acme", "name": trigger_id, "triggerType": "rabbitmq",
        "config": {"rabbitmq": {"host": "127.0.0.1", "port": 5672, "vhost": "/",
                                "username": "guest", "password": "{{secrets.AMQP_PASSWORD}}",
                                "message": '{"asset": "{{metadata.assetId}}", "t": {{event.data.t}}}',
                                **destination}},
    })  # fmt: skip


def job(trigger_id: str = "mq", action: str = "notify") -> DeliveryJob:
    context = {"event": {"data": {"t": -12}}, "metadata": {"assetId": "freezer-01"}}
    return DeliveryJob("trk-1", "acme", "0001", trigger_id, None, context, "br", action)


async def deliver(
    sender: Sender, triggers: list[Trigger], jobs: list[DeliveryJob], password: str = "guest"
) -> list[DeliveryOutcome]:
    deliverer = Deliverer(
        {t.id: t for t in triggers}, sender,
        secrets=DictSecrets({"acme": {"AMQP_PASSWORD": password}}),
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.05),
    )  # fmt: skip
    return [await deliverer.deliver(DeliveryGroup((j,))) for j in jobs]


@asynccontextmanager
async def temporary_queue(bind_to: str | None = None) -> AsyncIterator[AbstractQueue]:
    """A queue of the test's own (exclusive: gone with this connection), bound to the
    ``amq.direct`` exchange under its own name when ``bind_to`` names it."""
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=5)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"eventray-test-{secrets.token_hex(4)}", exclusive=True)
        if bind_to is not None:
            await queue.bind(bind_to, routing_key=queue.name)
        yield queue
    finally:
        await connection.close()


async def drained(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    got: list[AbstractIncomingMessage] = []
    for _ in range(100):
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            got.append(message)
            if len(got) == count:
                break
        else:
            await asyncio.sleep(0.02)
    return got


BODY = b'{"asset": "freezer-01", "t": -12}'


@needs_rabbitmq
def test_persistent_confirmed_messages_on_one_connection() -> None:
    async def scenario() -> None:
        sender = RabbitMqSender(policy=LOOPBACK)
        async with temporary_queue(bind_to="amq.direct") as queue:
            by_queue = trigger("q", queue=queue.name)
            by_exchange = trigger("x", exchange="amq.direct", routingKey=queue.name)
            try:
                jobs = [job("q", "a1"), job("x", "a2"), job("q", "a3"), job("x", "a4")]
                outcomes = await deliver(sender, [by_queue, by_exchange], jobs)
                got = await drained(queue, 4)
            finally:
                await sender.close()
        assert [o.failed for o in outcomes] == [[]] * 4
        assert [m.body for m in got] == [BODY] * 4
        assert {m.delivery_mode for m in got} == {aio_pika.DeliveryMode.PERSISTENT}
        assert [m.message_id for m in got] == [j.dedup_id() for j in jobs]  # same on a retry
        assert sender.connects == 1  # two triggers, one (host, port, vhost, user)
        [attempt] = outcomes[0].attempts
        assert attempt.request == (
            f"AMQP 127.0.0.1:5672 vhost '/' exchange (default) routing key {queue.name!r} "
            + BODY.decode()
        )
        assert "guest" not in attempt.request

    asyncio.run(scenario())


@needs_rabbitmq
def test_unroutable_and_missing_exchange_are_permanent() -> None:
    async def scenario() -> None:
        sender = RabbitMqSender(policy=LOOPBACK)
        async with temporary_queue() as queue:
            nowhere = trigger("nowhere", queue=f"eventray-missing-{secrets.token_hex(4)}")
            missing = trigger("missing", exchange=f"eventray-missing-{secrets.token_hex(4)}")
            fine = trigger("fine", queue=queue.name)
            try:
                outcomes = await deliver(
                    sender, [nowhere, missing, fine], [job("nowhere"), job("missing"), job("fine")]
                )
                got = await drained(queue, 1)
            finally:
                await sender.close()
        unroutable, not_found, ok = outcomes
        assert (
            len(unroutable.attempts) == 1
            and "no queue took the message (NO_ROUTE)" in (unroutable.failed[0][1])
        )
        assert len(not_found.attempts) == 1 and "NOT_FOUND - no exchange" in not_found.failed[0][1]
        # the channel the broker closed over the missing exchange is open again for the next one
        assert not ok.failed and [m.body for m in got] == [BODY] and sender.connects == 1

    asyncio.run(scenario())


@needs_rabbitmq
def test_a_wrong_password_or_vhost_is_permanent() -> None:
    doc: dict[str, Any] = trigger(queue="q").model_dump(by_alias=True)
    doc["config"]["rabbitmq"]["vhost"] = f"eventray-missing-{secrets.token_hex(4)}"
    no_vhost = Trigger.model_validate({**doc, "id": "no-vhost"})

    async def scenario() -> None:
        sender = RabbitMqSender(policy=LOOPBACK)
        try:
            [refused] = await deliver(sender, [trigger(queue="q")], [job()], "not-the-password")
            [missing] = await deliver(sender, [no_vhost], [job("no-vhost")])
        finally:
            await sender.close()
        [attempt] = refused.attempts
        assert "refused the connection (user 'guest', vhost '/')" in attempt.error
        assert "ACCESS_REFUSED" in attempt.error and "not-the-password" not in attempt.error
        assert len(missing.attempts) == 1 and "refused the connection" in missing.failed[0][1]
        assert sender.connects == 0

    asyncio.run(scenario())


@needs_rabbitmq
def test_loopback_is_refused_by_default_once() -> None:
    async def scenario() -> None:
        senders = TriggerSenders(http=AiohttpSender(), smtp=SmtpSender())  # default policy
        try:
            [outcome] = await deliver(senders, [trigger(queue="q")], [job()])
        finally:
            await senders.close()
        assert len(outcome.attempts) == 1 and senders.rabbitmq.connects == 0
        assert (
            "AMQP broker 127.0.0.1:5672 resolves to 127.0.0.1, a loopback address"
            in (outcome.failed[0][1])
        )

    asyncio.run(scenario())


def test_a_broker_that_is_down_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    doc: dict[str, Any] = trigger(queue="q").model_dump(by_alias=True)
    doc["config"]["rabbitmq"]["port"] = port

    async def scenario() -> None:
        sender = RabbitMqSender(policy=LOOPBACK)
        try:
            [outcome] = await deliver(sender, [Trigger.model_validate(doc)], [job()])
        finally:
            await sender.close()
        assert [a.success for a in outcome.attempts] == [False, False]

    asyncio.run(scenario())


def test_a_destination_is_required_when_the_trigger_is_loaded() -> None:
    with pytest.raises(ValueError, match="needs an exchange"):
        trigger()
    with pytest.raises(ValueError, match="disagree"):
        trigger(queue="a", routingKey="b")
