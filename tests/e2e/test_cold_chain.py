"""End to end on the embedded stack: ingress -> JetStream -> lanes -> rules -> store -> triggers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from eventray.cluster.stack import Stack
from eventray.testing.mail_sink import MailSink
from eventray.testing.sink import WebhookSink
from tests.e2e.conftest import OPS_TOKEN, nats_refusals, wait_for

pytestmark = pytest.mark.ray

GATEWAY_KEY = {"X-Api-Key": "sample-key-change-me-0001"}


def post(
    stack: Stack,
    body: Any,
    *,
    ds: str = "ds-gateway-http",
    headers: dict[str, str] | None = None,
    path: str = "/api/v1/events",
) -> requests.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(
        f"{stack.ingress_url}{path}?ds={ds}",
        data=raw,
        headers={
            "Content-Type": "application/json",
            **(GATEWAY_KEY if headers is None else headers),
        },
        timeout=10,
    )


def reading(device: str, minute: int, temperature: float, door: str = "closed") -> dict[str, Any]:
    return {
        "deviceId": device,
        "ts": f"2026-03-01T08:{minute:02d}:00Z",
        "readings": {"t": temperature, "rh": 55},
        "door": door,
        "batt": 90,
    }


def test_cold_chain_sequence(
    stack: Stack, sink: WebhookSink, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    sink.requests.clear()
    trackers = {}
    for minute, temp in [(0, -20.0), (1, -12.0), (2, -11.0)]:
        answer = post(stack, reading("FRZ-0001", minute, temp))
        assert answer.status_code == 201, answer.text
        trackers[minute] = answer.json()["eventTrackerId"]
    other = post(stack, reading("FRZ-0002", 3, -19.0)).json()["eventTrackerId"]

    def stored_count(trackers_: list[str]) -> int:
        quoted_ = ",".join(f"'{t}'" for t in trackers_)
        sql = f"SELECT count() AS n FROM {{db}}.events FINAL WHERE event_tracker_id IN ({quoted_})"
        return int(select(sql)[0]["n"])

    # The cooldown runs on processing time: start counting once the first alert was evaluated.
    wait_for(lambda: stored_count([*trackers.values(), other]) == 4)
    time.sleep(3.5)  # the business rule's cooldown is 3 s in this stack
    trackers[9] = post(stack, reading("FRZ-0001", 9, -10.0)).json()["eventTrackerId"]
    every = [*trackers.values(), other]
    quoted = ",".join(f"'{t}'" for t in every)
    wait_for(lambda: stored_count(every) == 5)

    stored = {
        r["event_tracker_id"]: r
        for r in select(
            f"SELECT event_tracker_id, asset_id, eva_number, eva_string FROM {{db}}.events FINAL "
            f"WHERE event_tracker_id IN ({quoted})"
        )
    }
    assert stored[trackers[1]]["asset_id"] == "freezer-01"
    assert float(stored[trackers[1]]["eva_number"]["1"]) == -12.0  # EVA 1 = temperature
    assert stored[trackers[1]]["eva_string"]["4"] == "critical"  # EVA 4 = status

    raw = {
        r["event_tracker_id"]
        for r in select(
            f"SELECT event_tracker_id FROM {{db}}.events_raw FINAL WHERE event_tracker_id IN ({quoted})"
        )
    }
    assert raw == set(trackers.values())  # freezer-01 has debugEnabled; freezer-02 does not

    fired = [
        r["event_tracker_id"]
        for r in select(
            "SELECT event_tracker_id FROM {db}.logs_rule FINAL WHERE business_rule_id = 'factory-alpha-high-temp' "
            f"AND matched = 1 AND event_tracker_id IN ({quoted}) ORDER BY created"
        )
    ]
    assert fired == [trackers[1], trackers[9]]  # -11 was inside the cooldown window

    def slack_texts() -> list[str]:
        return [r["body"]["text"] for r in sink.requests if r["path"] == "/hooks/slack"]

    wait_for(lambda: len(slack_texts()) == 2)
    assert slack_texts() == ["Alert #1: -12 C on freezer-01", "Alert #2: -10 C on freezer-01"]

    # One eventTrackerId links the ingress answer, the stored event, the rule log and the trigger log.
    wait_for(
        lambda: bool(
            select(
                f"SELECT 1 FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id = '{trackers[1]}' AND success = 1"
            )
        )
    )
    alert = trackers[1]
    linked = select(
        f"SELECT (SELECT count() FROM {{db}}.events FINAL WHERE event_tracker_id = '{alert}') AS e, "
        f"(SELECT count() FROM {{db}}.logs_rule FINAL WHERE event_tracker_id = '{alert}' AND matched = 1 "
        f"AND business_rule_id = 'factory-alpha-high-temp') AS r, "
        f"(SELECT count() FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id = '{alert}' "
        f"AND trigger_id = 'slack-ops') AS t"
    )[0]
    assert linked == {"e": 1, "r": 1, "t": 1}


def test_door_incident_opens_a_ticket_by_email(
    stack: Stack, mail: MailSink, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    mail.mails.clear()  # the sink is the session's: an earlier module's traffic opened doors
    opened = post(stack, reading("FRZ-0001", 20, -19.0, door="open"))
    assert opened.status_code == 201
    tracker = opened.json()["eventTrackerId"]
    wait_for(lambda: any(m.subject == "Cold chain incident on freezer-01" for m in mail.mails))
    [ticket] = [m for m in mail.mails if m.subject == "Cold chain incident on freezer-01"]
    assert ticket.rcpt_tos == ("coldchain@example.com",)
    assert ticket.mail_from == "eventray@example.com"
    wait_for(
        lambda: bool(
            select(
                f"SELECT 1 FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id = '{tracker}' "
                "AND trigger_id = 'ticketing' AND success = 1"
            )
        )
    )


def test_the_ops_webhook_renders_its_organization_s_secret_from_the_file(
    stack: Stack, sink: WebhookSink, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    """The lane reads <data_dir>/secrets.yaml: acme-foods' OPS_TOKEN reaches the endpoint, and
    not what logs_trigger keeps."""
    sink.requests.clear()
    answer = post(stack, reading("FRZ-0003", 30, -9.0))
    assert answer.status_code == 201
    tracker = answer.json()["eventTrackerId"]
    wait_for(lambda: any(r["path"] == "/hooks/ops" for r in list(sink.requests)))
    [ops] = [r for r in sink.requests if r["path"] == "/hooks/ops"][-1:]
    assert ops["headers"]["Authorization"] == f"Bearer {OPS_TOKEN}"
    wait_for(lambda: bool(select(
        f"SELECT 1 FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id = '{tracker}' "
        "AND trigger_id = 'ops-webhook' AND success = 1")))  # fmt: skip
    rows = select(f"SELECT * FROM {{db}}.logs_trigger FINAL WHERE event_tracker_id = '{tracker}'")
    assert rows and OPS_TOKEN not in orjson.dumps(rows, default=str).decode()


def test_ingress_statuses(stack: Stack, select: Callable[[str], list[dict[str, Any]]]) -> None:
    assert post(stack, reading("FRZ-0001", 1, -20), ds="nope").status_code == 404
    refused = post(
        stack, reading("FRZ-0001", 1, -20), headers={"X-Api-Key": "wrong-key-wrong-key-00"}
    )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid API key"
    assert post(stack, b"[1, 2]").status_code == 400
    assert post(stack, b"{not json").status_code == 400
    assert post(stack, {"deviceId": "FRZ-0001", "pad": "x" * 300_000}).status_code == 413
    batch = post(stack, [reading("FRZ-0002", 5, -19.5), 7], path="/api/v1/events/batch")
    assert batch.status_code == 207
    results = batch.json()["results"]
    assert results[0]["status"] == 201 and "eventTrackerId" in results[0]
    assert results[1] == {"status": 400, "error": "body must be a JSON object"}
    wait_for(
        lambda: bool(
            select(
                "SELECT 1 FROM {db}.events_raw FINAL WHERE reason = 'invalid API key' AND data_source_id = 'ds-gateway-http'"
            )
        )
    )


def test_an_mqtt_device_and_a_nats_trigger_in_the_same_cold_chain(
    stack: Stack, tmp_path: Path, select: Callable[[str], list[dict[str, Any]]]
) -> None:
    """A freezer on MQTT (its own login, QoS 1) goes through the same lanes, templates and
    store as the HTTP ones, and a critical reading is delivered by a ``nats`` trigger to a
    customer's NATS server (not the platform's)."""
    import asyncio

    import nats
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from eventray.cluster.services.nats_server import start_nats
    from eventray.pipeline.mqtt import uplink_topic

    with start_nats(store_dir=tmp_path / "customer-nats") as customer:
        documents = [
            {"kind": "DataSource", "id": "ds-mqtt", "orgId": "factory-alpha",
             "name": "Cold-room devices (MQTT)", "protocol": "mqtt", "auth": {"type": "none"},
             "assetBind": {"uuidFields": ["deviceId"]}},
            {"kind": "Trigger", "id": "nats-cold", "orgId": "acme-foods", "name": "Alerts bus",
             "triggerType": "nats", "config": {"nats": {"server": customer.url,
             "subject": "coldchain.alerts", "message": "{{metadata.assetId}} {{event.data.temperature}}"}}},
            {"kind": "RouteGroup", "id": "rg-critical-nats", "orgId": "acme-foods",
             "name": "Critical readings to the alerts bus", "version": 1, "routers": [
                 {"kind": "trigger", "trigger": {"triggerId": "nats-cold"},
                  "match": {"policy": "all", "rules": [
                      {"field": "data.status", "operator": "eq", "value": "critical"}]}}]},
            {"kind": "Asset", "id": "freezer-02", "orgId": "alpha-cold-room-1",
             "assetUUID": "FRZ-0002", "name": "Freezer 02", "templateId": "freezer-json",
             "routeGroupIds": ["rg-cold-chain", "rg-critical-nats"], "tags": ["freezer"],
             "protocol": {"type": "mqtt",
                          "mqtt": {"username": "frz-0002", "password": "freezer-two-secret"}}},
        ]  # fmt: skip
        stack.wait_revision(stack.apply(documents))
        stored = stack.wiring.config_store()
        try:  # apply stored the device's password as a bcrypt hash, never as written
            [asset] = [d for d in stored.documents() if d.get("id") == "freezer-02"]
        finally:
            stored.close()
        assert asset["protocol"]["mqtt"]["password"].startswith("$2")

        async def listen() -> list[bytes]:
            client = await nats.connect(customer.url)
            got: list[bytes] = []
            sub = await client.subscribe("coldchain.alerts")
            port = int(stack.mqtt_url.rsplit(":", 1)[1])
            answers: list[str] = []
            # the broker takes the device within mqtt.sync_interval_s (1 s) of the apply
            for _ in range(30):
                device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="frz-0002-e2e")
                device.username_pw_set("frz-0002", "freezer-two-secret")
                device.on_connect = lambda c, u, f, rc, p: answers.append(str(rc))
                device.connect("127.0.0.1", port)
                device.loop_start()
                for _ in range(50):
                    if answers:
                        break
                    await asyncio.sleep(0.02)
                if answers and answers[-1] == "Success":
                    break
                device.loop_stop()
                await asyncio.sleep(0.2)
            assert answers[-1] == "Success", answers
            try:
                info = device.publish(uplink_topic("ds-mqtt", "FRZ-0002"),
                                      orjson.dumps(reading("FRZ-0002", 40, -7.4)), qos=1)  # fmt: skip
                await asyncio.to_thread(info.wait_for_publish, 10)
                assert info.is_published()  # the broker's PUBACK: stored
                msg = await sub.next_msg(timeout=60)
                got.append(msg.data)
            finally:
                device.disconnect()
                device.loop_stop()
                await client.close()
            return got

        assert asyncio.run(listen()) == [b"freezer-02 -7.4"]
    query = ("SELECT asset_id, org_id FROM {db}.events FINAL WHERE asset_id = 'freezer-02' "
             "AND eva_number[1] = -7.4")  # fmt: skip
    wait_for(lambda: bool(select(query)))
    assert select(query) == [{"asset_id": "freezer-02", "org_id": "alpha-cold-room-1"}]
    wait_for(lambda: bool(select(
        "SELECT 1 FROM {db}.logs_trigger FINAL WHERE trigger_id = 'nats-cold' AND success = 1")))  # fmt: skip


def test_no_role_was_refused_anything_on_the_way(stack: Stack) -> None:
    """Everything above ran on the actors' own NATS users (:mod:`eventray.cluster.roles`)."""
    assert nats_refusals(stack) == []
