"""Triggers of type ``teams`` against a loopback aiohttp server standing in for Teams: the
body each kind of webhook takes (Adaptive Card for Workflows, MessageCard for the legacy
connectors), and Teams' errors read as HTTP's (4xx permanent, 5xx retried)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob
from eventray.pipeline.triggers.teams import ADAPTIVE_CARD_SCHEMA, teams_format

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the stand-in listens there


class Teams:
    """Answers 202 (as Workflows do) and keeps each body; ``answers`` (status codes) are
    served first, in order."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self.answers: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append((request.path, orjson.loads(await request.read())))
        status = self.answers.pop(0) if self.answers else 202
        return web.Response(status=status, text="" if status < 300 else "Bad payload received")


@asynccontextmanager
async def teams() -> AsyncIterator[Teams]:
    server = Teams()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def trigger(trigger_id: str, url: str, fmt: str | None = None) -> Trigger:
    config: dict[str, Any] = {
        "webhookUrl": url, "title": "Freezer {{metadata.assetId}}",
        "text": "{{event.data.t}} C at {{metadata.site}}",
    }  # fmt: skip
    if fmt is not None:
        config["format"] = fmt
    return Trigger.model_validate({"id": trigger_id, "orgId": "acme", "name": trigger_id,
                                   "triggerType": "teams", "config": {"teams": config}})  # fmt: skip


def job(trigger_id: str) -> DeliveryJob:
    context = {"event": {"data": {"t": -12}}, "metadata": {"assetId": "freezer-01", "site": "Lyon"}}
    return DeliveryJob("trk-1", "acme", "0001", trigger_id, None, context, "br", trigger_id)


async def deliver(triggers: list[Trigger], attempts: int = 3) -> list[DeliveryOutcome]:
    senders = TriggerSenders(http=AiohttpSender(policy=LOOPBACK), smtp=SmtpSender(policy=LOOPBACK))
    deliverer = Deliverer({t.id: t for t in triggers}, senders, secrets=DictSecrets(),
                          retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.01))  # fmt: skip
    try:
        return [await deliverer.deliver(DeliveryGroup((job(t.id),))) for t in triggers]
    finally:
        await senders.close()


ADAPTIVE = {
    "type": "message",
    "attachments": [
        {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": ADAPTIVE_CARD_SCHEMA,
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": "Freezer freezer-01", "weight": "Bolder",
                     "size": "Medium", "wrap": True},
                    {"type": "TextBlock", "text": "-12 C at Lyon", "wrap": True},
                ],
            },
        }
    ],
}  # fmt: skip
MESSAGE_CARD = {
    "@type": "MessageCard",
    "@context": "https://schema.org/extensions",
    "summary": "Freezer freezer-01",
    "title": "Freezer freezer-01",
    "text": "-12 C at Lyon",
}


def test_each_kind_of_webhook_gets_its_card() -> None:
    async def scenario() -> None:
        async with teams() as server:
            outcomes = await deliver([
                trigger("workflow", f"{server.url}/workflows/abc/triggers/manual/paths/invoke"),
                trigger("connector", f"{server.url}/webhookb2/1234@5678/IncomingWebhook/ab/cd"),
                trigger("unknown", f"{server.url}/hooks/teams"),
                trigger("forced", f"{server.url}/workflows/abc", fmt="messageCard"),
                trigger("forced-adaptive", f"{server.url}/webhookb2/x", fmt="adaptiveCard"),
            ])  # fmt: skip
        assert [o.failed for o in outcomes] == [[]] * 5
        assert [body for _, body in server.bodies] == [
            ADAPTIVE, MESSAGE_CARD, ADAPTIVE, MESSAGE_CARD, ADAPTIVE
        ]  # fmt: skip

    asyncio.run(scenario())


def test_a_4xx_is_permanent_and_a_5xx_retried() -> None:
    async def scenario() -> None:
        async with teams() as server:
            server.answers = [400]
            [refused] = await deliver([trigger("t", f"{server.url}/workflows/a")])
            server.answers = [502, 503]
            [retried] = await deliver([trigger("t", f"{server.url}/workflows/a")])
        assert [(a.success, a.error) for a in refused.attempts] == [(False, "HTTP 400")]
        assert refused.attempts[0].response == "Bad payload received"
        assert [(a.success, a.error) for a in retried.attempts] == [
            (False, "HTTP 502"), (False, "HTTP 503"), (True, "")
        ]  # fmt: skip

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://prod-12.westeurope.logic.azure.com:443/workflows/0a1b/triggers/manual/paths/invoke?sig=x", "adaptiveCard"),
        ("https://default0a1b.02.environment.api.powerplatform.com/powerautomate/automations/direct/workflows/9f/triggers/manual/paths/invoke", "adaptiveCard"),
        ("https://acme.webhook.office.com/webhookb2/1a@2b/IncomingWebhook/3c/4d", "messageCard"),
        ("https://outlook.office.com/webhook/1a@2b/IncomingWebhook/3c/4d", "messageCard"),
        ("https://hooks.example.com/teams", "adaptiveCard"),
    ],
)  # fmt: skip
def test_auto_chooses_by_the_url(url: str, expected: str) -> None:
    assert teams_format(url) == expected
    assert teams_format(url, "messageCard") == "messageCard"
