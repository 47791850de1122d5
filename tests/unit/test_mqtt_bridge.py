"""The ingress's MQTT bridge on the in-memory stream twin: what is published, kept, held
back or tried again, and the topic scheme and accounts it relies on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from eventray.actors.ingress_app import IngressApp
from eventray.config.settings import IngressSettings
from eventray.pipeline.adapters.memory_stream import MemoryStream
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ingress import HEADER_ASSET, Accepted, IngressPolicy, Refused
from eventray.pipeline.models.org import IngestQuota
from eventray.pipeline.mqtt import accounts, parse_uplink, tracker_id_of, uplink_subject
from eventray.pipeline.ports import OutboxMessage, Uplink
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, as_dicts
from tests.integration.test_mqtt_ingestion import mqtt_catalog

READING = orjson.dumps({"readings": {"t": -18.0}})


class UnavailableStream(MemoryStream):
    """The in-memory stream, unreachable for its first ``failures`` appends."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def append(self, messages: Sequence[OutboxMessage], *, timeout_s: float) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise RetryableError("stream unreachable")
        return await super().append(messages, timeout_s=timeout_s)


def app_for(catalog: Catalog, stream: MemoryStream) -> tuple[IngressApp, list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []

    async def keep(rows: dict[str, list[tuple[Any, ...]]]) -> None:
        kept.extend(as_dicts({"events_raw": rows["events_raw"]})["events_raw"])

    settings = IngressSettings(port=0)
    policy = IngressPolicy(catalog, partitions=2, subject_prefix="eventray.in",
                           max_body_bytes=settings.max_body_bytes)  # fmt: skip
    app = IngressApp(stream=stream, policy=policy, settings=settings, partitions=2, keep=keep,
                     rows=RowContext.from_catalog(catalog, RetentionPolicy()), mqtt=True)  # fmt: skip
    return app, kept


async def stored(stream: MemoryStream) -> int:
    return sum([await stream.pending(p) for p in (0, 1)])


def test_uplinks_are_published_and_refusals_kept_whole(samples_dir: Path) -> None:
    async def scenario() -> None:
        stream = MemoryStream()
        app, kept = app_for(mqtt_catalog(samples_dir), stream)
        good = stream.mqtt.put("ds-mqtt", "FRZ-0002", READING)
        codec = stream.mqtt.put("ds-mqtt", "24E124136B316241", b"\x01\x75\x32", qos=0)
        unknown = stream.mqtt.put("ds-mqtt", "NO-SUCH-UUID", READING)
        http_source = stream.mqtt.put("ds-gateway-http", "FRZ-0002", READING)
        assert await app.bridge_once(stream.mqtt) == 4
        assert await stored(stream) == 2
        assert {id(u) for u in stream.mqtt.done} == {
            id(good),
            id(codec),
            id(unknown),
            id(http_source),
        }
        assert not stream.mqtt.waiting
        reasons = sorted(r["reason"] for r in kept)
        assert reasons == ["no asset with assetUUID 'NO-SUCH-UUID'",
                           "no mqtt data source 'ds-gateway-http'"]  # fmt: skip
        assert {r["stage"] for r in kept} == {"bind"} and all(r["body"] for r in kept)
        assert app.mqtt_counts == {"accepted": 2, "refused": 2, "retried": 0, "shed": 0}

    asyncio.run(scenario())


def test_an_unreachable_stream_keeps_the_uplinks_for_a_later_round(samples_dir: Path) -> None:
    async def scenario() -> None:
        stream = UnavailableStream(failures=1)
        app, _ = app_for(mqtt_catalog(samples_dir), stream)
        stream.mqtt.put("ds-mqtt", "FRZ-0002", READING)
        stream.mqtt.put("ds-mqtt", "FRZ-0002", READING, qos=0)
        await app.bridge_once(stream.mqtt)
        assert await stored(stream) == 0 and not stream.mqtt.done
        # the QoS 1 uplink waits in the broker's store for its delay; QoS 0 is gone (at most once)
        assert [u.qos for _, u in stream.mqtt.waiting] == [1]
        stream.mqtt.waiting = [(0.0, u) for _, u in stream.mqtt.waiting]
        await app.bridge_once(stream.mqtt)
        assert await stored(stream) == 1 and len(stream.mqtt.done) == 1
        assert app.mqtt_counts["retried"] == 2

    asyncio.run(scenario())


def test_an_organization_over_its_quota_is_held_back_not_dropped(samples_dir: Path) -> None:
    async def scenario() -> None:
        catalog = mqtt_catalog(samples_dir)
        org = catalog.orgs["factory-alpha"]
        quota = IngestQuota(events_per_second=1, burst=1)
        orgs = {**catalog.orgs, org.id: org.model_copy(update={"ingest_quota": quota})}
        stream = MemoryStream()
        app, _ = app_for(dataclasses.replace(catalog, orgs=orgs), stream)
        for _ in range(3):
            stream.mqtt.put("ds-mqtt", "FRZ-0002", READING)
        await app.bridge_once(stream.mqtt)
        assert await stored(stream) == 1
        assert len(stream.mqtt.waiting) == 2 and app.mqtt_counts["shed"] == 2

    asyncio.run(scenario())


def test_the_policy_binds_by_topic_with_a_stable_id_per_stored_uplink(samples_dir: Path) -> None:
    catalog = mqtt_catalog(samples_dir)
    policy = IngressPolicy(catalog, partitions=2, subject_prefix="eventray.in",
                           max_body_bytes=1024)  # fmt: skip
    uplink = Uplink("ds-mqtt", "FRZ-0002", b"not json at all", 1, 42, "store-a")
    first, again = policy.uplink(uplink), policy.uplink(uplink)
    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert first.event_tracker_id == again.event_tracker_id == tracker_id_of("store-a", 42)
    assert first.headers[HEADER_ASSET] == "freezer-02" and first.body == b"not json at all"
    assert tracker_id_of("store-b", 42) != first.event_tracker_id  # a new store starts over
    big = policy.uplink(dataclasses.replace(uplink, payload=b"x" * 2048))
    assert isinstance(big, Refused) and big.status == 413 and big.keep
    deep = policy.uplink(dataclasses.replace(uplink, payload=b"[" * 300 + b"]" * 300))
    assert isinstance(deep, Refused) and deep.status == 400


def test_topics_subjects_and_accounts(samples_dir: Path) -> None:
    assert uplink_subject("ds-mqtt", "FRZ-0002") == "eventray.mqtt.ds-mqtt.FRZ-0002.up"
    assert parse_uplink("eventray.mqtt.ds-mqtt.FRZ-0002.up") == ("ds-mqtt", "FRZ-0002")
    assert parse_uplink("$MQTT.msgs.eventray.mqtt.ds-mqtt.FRZ-0002.up") == ("ds-mqtt", "FRZ-0002")
    assert parse_uplink("eventray.mqtt.ds-mqtt.FRZ-0002.down") is None
    assert parse_uplink("eventray.in.p0") is None
    by_asset = {a.asset_id: a for a in accounts(mqtt_catalog(samples_dir))}
    assert set(by_asset) == {"freezer-02", "lora-th-01"}
    assert by_asset["freezer-02"].subjects == ("eventray.mqtt.ds-mqtt.FRZ-0002.up",)
    disabled = mqtt_catalog(samples_dir, disabled=frozenset({"freezer-02"}))
    assert {a.asset_id for a in accounts(disabled)} == {"lora-th-01"}
