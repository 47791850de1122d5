"""Triggers of type ``nats`` against a real nats-server (the embedded one, on a free port)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.nats_sender import NatsSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the server listens there


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path / "nats") as running:
        yield running


def trigger(server: str, subject: str = "acme.alerts") -> Trigger:
    return Trigger.model_validate({
        "id": "bus", "orgId": "acme", "name": "bus", "triggerType": "nats",
        "config": {"nats": {"server": server, "subject": subject,
                            "message": "{{metadata.assetId}} at {{event.data.t}} C"}},
    })  # fmt: skip


def job() -> DeliveryJob:
    context = {"event": {"data": {"t": -12}},
               "metadata": {"assetId": "freezer-01", "target": "eventray.in.p0"}}  # fmt: skip
    return DeliveryJob("trk-1", "acme", "0001", "bus", None, context, "br", "notify")


async def deliver(
    sender: NatsSender, trig: Trigger, times: int = 1, attempts: int = 2
) -> list[DeliveryOutcome]:
    deliverer = Deliverer({trig.id: trig}, sender, secrets=DictSecrets(),
                          retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.01))  # fmt: skip
    return [await deliverer.deliver(DeliveryGroup((job(),))) for _ in range(times)]


async def listen(url: str, subject: str) -> tuple[Any, list[bytes]]:
    received: list[bytes] = []

    async def got(msg: Any) -> None:
        received.append(msg.data)

    client = await nats.connect(url)
    await client.subscribe(subject, cb=got)
    await client.flush()
    return client, received


def test_a_message_is_published_on_one_kept_connection(server: RunningNats) -> None:
    async def scenario() -> None:
        client, received = await listen(server.url, "acme.alerts")
        sender = NatsSender(policy=LOOPBACK)
        try:
            outcomes = await deliver(sender, trigger(server.url), times=3)
            await client.flush()
            for _ in range(50):
                if len(received) == 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            await sender.close()
            await client.close()
        assert received == [b"freezer-01 at -12 C"] * 3
        assert sender.connects == 1  # not one connection per delivery
        [attempt] = outcomes[0].attempts
        assert attempt.success and attempt.request.startswith("NATS nats://127.0.0.1:")
        assert server.password not in attempt.request  # the URL's credentials are not kept

    asyncio.run(scenario())


def test_loopback_is_refused_by_default_once(server: RunningNats) -> None:
    async def scenario() -> None:
        sender = NatsSender()
        try:
            [outcome] = await deliver(sender, trigger(server.url))
        finally:
            await sender.close()
        assert len(outcome.attempts) == 1 and sender.connects == 0
        assert "a loopback address; allow it with triggers.allow_networks" in outcome.failed[0][1]

    asyncio.run(scenario())


def test_the_platform_s_subjects_are_refused(server: RunningNats) -> None:
    async def scenario() -> None:
        client, received = await listen(server.url, "eventray.>")
        sender = NatsSender(policy=LOOPBACK)
        try:
            # plain text would be refused at load; rendered from the event, it is at delivery
            [outcome] = await deliver(sender, trigger(server.url, "{{metadata.target}}"))
            await asyncio.sleep(0.1)
        finally:
            await sender.close()
            await client.close()
        assert not received and len(outcome.attempts) == 1
        assert outcome.failed[0][1].startswith("NATS subject 'eventray.in.p0' is reserved")

    asyncio.run(scenario())


def test_a_server_that_is_down_is_retried(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        sender = NatsSender(policy=LOOPBACK)
        try:
            [outcome] = await deliver(sender, trigger(f"nats://127.0.0.1:{port}"), attempts=2)
        finally:
            await sender.close()
        assert [a.success for a in outcome.attempts] == [False, False]
        assert outcome.failed[0][1].endswith("after 2 attempt(s)")

    asyncio.run(scenario())


def test_a_reserved_subject_is_refused_when_the_trigger_is_loaded() -> None:
    with pytest.raises(ValueError, match=re.escape("'eventray.triggers' is reserved")):
        trigger("nats://example.com:4222", "eventray.triggers")
