"""Trigger delivery over real HTTP to a loopback webhook sink (aiohttp sender, no mocks)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.memory_stream import MemoryOutbox, MemoryQueue
from eventray.pipeline.models import Trigger
from eventray.pipeline.ports import OutboxMessage
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.storage.rows import RowContext
from eventray.pipeline.storage.sink import MemoryRowSink
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.dispatcher import TriggerDispatcher
from eventray.pipeline.triggers.policy import CircuitBreaker, RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob
from eventray.testing.sink import WebhookSink

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the sink listens there; refused by default


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
        sender = AiohttpSender(policy=LOOPBACK)
        try:
            kw.setdefault("secrets", DictSecrets({"o": {"TOKEN": "t0k"}}))
            kw.setdefault("triggers", triggers(sink.url))
            deliverer = Deliverer(
                send=sender, retry=RetryPolicy(max_attempts=3, base_delay_s=0.01), **kw
            )
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


def test_an_open_circuit_fails_fast(sink: WebhookSink) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=60)
    first = deliver(sink, DeliveryGroup((job("down"),)), breaker=breaker)
    # two real failures open the circuit; the third attempt is refused without a request
    assert [a.error.startswith("circuit open") for a in first.attempts] == [False, False, True]
    assert first.failed[0][1] == "circuit open for trigger 'down' after repeated failures"
    parallel = deliver(sink, DeliveryGroup((job("slack", "a"), job("slack", "b")), mode="parallel"))
    assert sorted(r["body"]["text"] for r in sink.requests) == ["a", "b"] and not parallel.failed


# --------------------------------------------------------------------------- per-org secrets

ORGS = {"root": ("root",), "acme": ("acme", "root"), "rival": ("rival", "root")}
SECRETS = DictSecrets({
    "root": {"ROOT_SHARED": {"value": "r00t-shared-value", "shared": True},
             "ROOT_PRIVATE": "r00t-private-value"},
    "acme": {"TOKEN": "acme-token-value"},
    "rival": {"TOKEN": "rival-token-value"},
})  # fmt: skip


def hook(org: str, header: str, endpoint: str = "/hook") -> Trigger:
    return Trigger.model_validate({
        "id": f"hook-{org}", "orgId": org, "name": "h", "triggerType": "http",
        "config": {"http": {"endpoint": endpoint, "headers": {"X-Token": header}, "timeoutMs": 2000}},
    })  # fmt: skip


def deliver_as(sink: WebhookSink, trigger: Trigger, job_org: str = "acme") -> DeliveryOutcome:
    trigger = trigger.model_copy(update={"config": trigger.config.model_copy(update={
        "http": trigger.config.http.model_copy(update={"endpoint": sink.url + trigger.config.http.endpoint})  # type: ignore[union-attr]
    })})  # fmt: skip
    one = DeliveryJob("trk-1", job_org, "0001", trigger.id, None, {"event": {}}, "br", "a")
    return deliver(sink, DeliveryGroup((one,)), triggers={trigger.id: trigger}, secrets=SECRETS,
                   lineage=ORGS.__getitem__)  # fmt: skip


def test_a_trigger_renders_its_own_organization_s_secret(sink: WebhookSink) -> None:
    assert not deliver_as(sink, hook("acme", "{{secrets.TOKEN}}")).failed
    assert not deliver_as(sink, hook("rival", "{{secrets.TOKEN}}"), job_org="rival").failed
    assert [r["headers"]["X-Token"] for r in sink.requests] == [
        "acme-token-value", "rival-token-value"
    ]  # fmt: skip


def test_an_ancestor_s_secret_only_when_shared(sink: WebhookSink) -> None:
    assert not deliver_as(sink, hook("acme", "{{secrets.ROOT_SHARED}}")).failed
    refused = deliver_as(sink, hook("acme", "{{secrets.ROOT_PRIVATE}}"))
    assert refused.failed[0][1] == "unknown secret 'ROOT_PRIVATE'"
    assert [r["headers"]["X-Token"] for r in sink.requests] == ["r00t-shared-value"]


def test_no_secret_of_another_organization_whatever_the_name(sink: WebhookSink) -> None:
    # "rival" has a TOKEN; an organization without one cannot reach it by naming it
    lonely = DictSecrets({"rival": {"TOKEN": "rival-token-value"}})
    trigger = hook("acme", "{{secrets.TOKEN}}")
    trigger = trigger.model_copy(update={"config": trigger.config.model_copy(update={
        "http": trigger.config.http.model_copy(update={"endpoint": sink.url + "/hook"})  # type: ignore[union-attr]
    })})  # fmt: skip
    one = DeliveryJob("trk-1", "acme", "0001", trigger.id, None, {"event": {}}, "br", "a")
    outcome = deliver(sink, DeliveryGroup((one,)), triggers={trigger.id: trigger}, secrets=lonely,
                      lineage=ORGS.__getitem__)  # fmt: skip
    assert outcome.failed[0][1] == "unknown secret 'TOKEN'" and not sink.requests


def test_secret_values_never_reach_what_is_recorded(sink: WebhookSink) -> None:
    """A secret placed in the URL's path and query, in the body and echoed back by the
    endpoint is replaced by *** in the recorded request, response and error."""
    sink.echo = True
    secret = "acme-token-value"
    trigger = Trigger.model_validate({
        "id": "leaky", "orgId": "acme", "name": "h", "triggerType": "http",
        "config": {"http": {"endpoint": sink.url + "/x/{{secrets.TOKEN}}?key={{secrets.TOKEN}}",
                            "body": {"token": "{{secrets.TOKEN}}"}, "timeoutMs": 2000}},
    })  # fmt: skip
    one = DeliveryJob("trk-1", "acme", "0001", "leaky", None, {"event": {}}, "br", "a")
    ok = deliver(sink, DeliveryGroup((one,)), triggers={"leaky": trigger}, secrets=SECRETS,
                 lineage=ORGS.__getitem__)  # fmt: skip
    assert sink.requests[0]["body"] == {"token": secret}  # delivered with the value
    sink.fail_first = 5  # the same endpoint now fails: the error and response are recorded
    failed = deliver(sink, DeliveryGroup((one,)), triggers={"leaky": trigger}, secrets=SECRETS,
                     lineage=ORGS.__getitem__)  # fmt: skip
    attempts = ok.attempts + failed.attempts
    recorded = " ".join(f"{a.request} {a.response} {a.error}" for a in attempts)
    recorded += " ".join(reason for _, reason in failed.failed)
    assert secret not in recorded and "***" in recorded
    assert "/x/***?key=***" in ok.attempts[0].request


def test_a_bounded_stop_abandons_a_delivery_stuck_in_retries_unacknowledged(
    sink: WebhookSink,
) -> None:
    async def scenario() -> None:
        outbox = MemoryOutbox()
        group = DeliveryGroup((job("down"),))
        await outbox.enqueue([OutboxMessage("triggers", group.to_bytes(), msg_id="g1")])
        sender = AiohttpSender(policy=LOOPBACK)
        deliverer = Deliverer(triggers(sink.url), sender, secrets=DictSecrets(),
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
