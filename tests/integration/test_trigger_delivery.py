"""Trigger delivery over real HTTP to a loopback webhook sink (aiohttp sender, no mocks)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.memory_stream import MemoryOutbox, MemoryQueue
from eventray.pipeline.models import Trigger
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.secrets import EnvSecrets
from eventray.pipeline.storage.rows import RowContext
from eventray.pipeline.storage.sink import MemoryRowSink
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.dispatcher import TriggerDispatcher
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob
from eventray.testing.sink import WebhookSink

pytestmark = pytest.mark.services


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as running:
        yield running


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released), instead of a fixed one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def triggers(url: str) -> dict[str, Trigger]:
    down = f"http://127.0.0.1:{closed_port()}/closed"
    docs: list[dict[str, Any]] = [
        {"id": "slack", "orgId": "o", "name": "s", "triggerType": "slack",
         "config": {"slack": {"webhookUrl": f"{url}/slack", "channel": "#ops", "message": "{{event.data.t}} C"}}},
        {"id": "http", "orgId": "o", "name": "h", "triggerType": "http",
         "config": {"http": {"endpoint": f"{url}/hook", "headers": {"Authorization": "Bearer {{secrets.TOKEN}}"},
                             "body": {"asset": "{{metadata.assetId}}", "t": "{{event.data.t}}"}, "timeoutMs": 2000}}},
        {"id": "down", "orgId": "o", "name": "d", "triggerType": "http",
         "config": {"http": {"endpoint": down, "timeoutMs": 300}}},
        {"id": "kafka", "orgId": "o", "name": "k", "triggerType": "kafka",
         "config": {"kafka": {"bootstrapServers": "127.0.0.1:9", "topic": "t", "message": "m"}}},
    ]  # fmt: skip
    return {d["id"]: Trigger.model_validate(d) for d in docs}


def job(trigger_id: str, message: str | None = None) -> DeliveryJob:
    context = {
        "event": {"data": {"t": -12}},
        "metadata": {"assetId": "freezer-01"},
        "state": {},
        "params": {},
    }
    return DeliveryJob("trk-1", "o", "0001", trigger_id, message, context, "br", f"a-{trigger_id}")


def deliver(sink: WebhookSink, group: DeliveryGroup, **kw: Any) -> DeliveryOutcome:
    async def run() -> DeliveryOutcome:
        sender = AiohttpSender()
        try:
            deliverer = Deliverer(triggers(sink.url), sender, secrets=EnvSecrets({"EVENTRAY_SECRET_TOKEN": "t0k"}),
                                  retry=RetryPolicy(max_attempts=3, base_delay_s=0.01), **kw)  # fmt: skip
            return await deliverer.deliver(group)
        finally:
            await sender.close()

    return asyncio.run(run())


def test_rendered_requests_reach_the_sink(sink: WebhookSink) -> None:
    outcome = deliver(sink, DeliveryGroup((job("slack", "Alert #1"), job("http"))))
    assert [a.success for a in outcome.attempts] == [True, True] and not outcome.failed
    slack, hook = sink.requests
    assert (slack["path"], slack["body"]) == ("/slack", {"text": "Alert #1", "channel": "#ops"})
    assert hook["body"] == {"asset": "freezer-01", "t": "-12"}
    assert hook["headers"]["Authorization"] == "Bearer t0k"  # secret resolved only at delivery


def test_retries_then_success(sink: WebhookSink) -> None:
    sink.fail_first = 2  # two 503s
    outcome = deliver(sink, DeliveryGroup((job("slack"),)))
    assert [(a.attempt, a.success, a.error) for a in outcome.attempts] == [
        (1, False, "HTTP 503"), (2, False, "HTTP 503"), (3, True, "")
    ]  # fmt: skip
    assert sink.requests[-1]["body"]["text"] == "-12 C"  # the trigger's own message template


def test_on_error_stop_skips_the_rest_and_failures_are_reported(sink: WebhookSink) -> None:
    group = DeliveryGroup((job("down"), job("slack")), mode="sequential", on_error="stop")
    outcome = deliver(sink, group)
    assert [j.trigger_id for j, _ in outcome.failed] == ["down"]
    assert "after 3 attempt(s)" in outcome.failed[0][1]
    assert [j.trigger_id for j in outcome.skipped] == ["slack"] and not sink.requests
    carry_on = deliver(sink, DeliveryGroup((job("down"), job("slack")), on_error="continue"))
    assert [j.trigger_id for j, _ in carry_on.failed] == ["down"] and len(sink.requests) == 1


def test_unsupported_type_and_open_circuit_fail_fast(sink: WebhookSink) -> None:
    outcome = deliver(sink, DeliveryGroup((job("kafka"),)))
    assert outcome.failed[0][1] == "trigger type 'kafka' has no sender yet"
    breaker = CircuitBreaker(threshold=2, reset_s=60)
    first = deliver(sink, DeliveryGroup((job("down"),)), breaker=breaker)
    # two real failures open the circuit; the third attempt is refused without a request
    assert [a.error.startswith("circuit open") for a in first.attempts] == [False, False, True]
    assert first.failed[0][1] == "circuit open for trigger 'down' after repeated failures"
    parallel = deliver(sink, DeliveryGroup((job("slack", "a"), job("slack", "b")), mode="parallel"))
    assert sorted(r["body"]["text"] for r in sink.requests) == ["a", "b"] and not parallel.failed


def test_a_bounded_stop_abandons_a_delivery_stuck_in_retries_unacknowledged(
    sink: WebhookSink,
) -> None:
    async def scenario() -> None:
        outbox = MemoryOutbox()
        group = DeliveryGroup((job("down"),))
        await outbox.enqueue([OutboxMessage("triggers", group.to_bytes(), msg_id="g1")])
        sender = AiohttpSender()
        deliverer = Deliverer(triggers(sink.url), sender, secrets=EnvSecrets({}),
                              retry=RetryPolicy(max_attempts=100, base_delay_s=1.0))  # fmt: skip
        dispatcher = TriggerDispatcher(queue=MemoryQueue(outbox, "triggers"), deliverer=deliverer,
                                       sink=MemoryRowSink(), rows=RowContext())  # fmt: skip
        dispatcher.start()
        await asyncio.sleep(0.5)  # the first attempt failed at once: backing off for a second
        started = time.monotonic()
        assert await dispatcher.stop(timeout_s=0.3) == 1
        assert time.monotonic() - started < 2.0
        assert outbox.acked == set()  # the queue delivers it again
        await sender.close()

    asyncio.run(scenario())
