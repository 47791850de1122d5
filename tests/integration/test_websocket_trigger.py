"""Triggers of type ``websocket`` against a real WebSocket server (aiohttp, loopback, free port)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import WSMsgType, web

from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the server listens there


class Server:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tokens: list[str] = []
        self.connections = 0
        self.port = 0
        self.sockets: list[web.WebSocketResponse] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.tokens.append(request.headers.get("Authorization", ""))
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.messages.append(msg.data)
        return ws


@asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server()
    app = web.Application()
    app.router.add_get("/ws", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def trigger(url: str) -> Trigger:
    return Trigger.model_validate({
        "id": "ws", "orgId": "acme", "name": "ws", "triggerType": "websocket",
        "config": {"websocket": {"url": url, "headers": {"Authorization": "Bearer {{secrets.WS}}"},
                                 "message": "{{metadata.assetId}} at {{event.data.t}} C"}},
    })  # fmt: skip


JOB = DeliveryJob("trk-1", "acme", "0001", "ws", None,
                  {"event": {"data": {"t": -12}}, "metadata": {"assetId": "freezer-01"}}, "br", "a")  # fmt: skip


async def deliver(senders: TriggerSenders, trig: Trigger, times: int = 1) -> list[DeliveryOutcome]:
    deliverer = Deliverer({trig.id: trig}, senders, secrets=DictSecrets({"acme": {"WS": "w5-t0ken"}}),
                          retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))  # fmt: skip
    return [await deliverer.deliver(DeliveryGroup((JOB,))) for _ in range(times)]


def senders(policy: EgressPolicy) -> TriggerSenders:
    return TriggerSenders(http=AiohttpSender(policy=policy), smtp=SmtpSender(policy=policy))


async def settle(server: Server, count: int) -> None:
    for _ in range(100):
        if len(server.messages) >= count:
            return
        await asyncio.sleep(0.01)


def test_messages_go_over_one_kept_connection_and_a_closed_one_is_reopened() -> None:
    async def scenario() -> None:
        async with serving() as server:
            out = senders(LOOPBACK)
            try:
                url = f"ws://127.0.0.1:{server.port}/ws"
                first = await deliver(out, trigger(url), times=3)
                await settle(server, 3)
                assert server.messages == ["freezer-01 at -12 C"] * 3
                assert server.connections == 1 and server.tokens == ["Bearer w5-t0ken"]
                await server.sockets[0].close()  # the peer goes away
                await asyncio.sleep(0.05)
                again = await deliver(out, trigger(url))
                await settle(server, 4)
                assert len(server.messages) == 4 and server.connections == 2
            finally:
                await out.close()
        attempt = first[0].attempts[0]
        assert attempt.success and attempt.request == f"WS {url} freezer-01 at -12 C"
        assert "w5-t0ken" not in attempt.request and not again[0].failed

    asyncio.run(scenario())


def test_loopback_is_refused_by_default_once() -> None:
    async def scenario() -> None:
        async with serving() as server:
            out = senders(EgressPolicy())
            try:
                [outcome] = await deliver(out, trigger(f"ws://127.0.0.1:{server.port}/ws"))
            finally:
                await out.close()
            assert server.connections == 0 and len(outcome.attempts) == 1
            assert "loopback address" in outcome.failed[0][1]

    asyncio.run(scenario())


def test_a_server_that_is_down_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        out = senders(LOOPBACK)
        try:
            [outcome] = await deliver(out, trigger(f"ws://127.0.0.1:{port}/ws"))
        finally:
            await out.close()
        assert [a.success for a in outcome.attempts] == [False, False]

    asyncio.run(scenario())
