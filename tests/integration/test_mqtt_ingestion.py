"""MQTT ingestion against the embedded broker (nats-server's MQTT listener) with a real MQTT
client (paho-mqtt): per-asset logins and topic ACLs, QoS 0 and 1 into the event stream through
the ingress's bridge, revocation while connected, a binary codec payload, and a burst of 1,000
QoS 1 uplinks with nothing lost.

The platform's processes log in with their role's credentials exactly as in a stack (the
ingress as ``ingress``), so a permission the bridge lacks fails here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from eventray.actors.ingress_app import IngressApp
from eventray.cluster.mqtt_accounts import DeviceSync, mqtt_login
from eventray.cluster.roles import nats_roles
from eventray.cluster.services.nats_server import MQTT_PROBE, MqttListener, RunningNats, start_nats
from eventray.config.settings import IngressSettings, NatsSettings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.adapters.nats_uplinks import ensure_bridge_consumer
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import ConfigError
from eventray.pipeline.ingress import HEADER_ASSET, HEADER_ORG, IngressPolicy
from eventray.pipeline.loader import read_entities
from eventray.pipeline.models import Asset, DataSource
from eventray.pipeline.models.asset import AssetProtocol, MqttCredentials
from eventray.pipeline.mqtt import uplink_topic
from eventray.pipeline.storage.retention import RetentionPolicy
from eventray.pipeline.storage.rows import RowContext, as_dicts

pytestmark = pytest.mark.services

PASSWORDS = {"freezer-02": "freezer-two-secret", "lora-th-01": "lora-probe-secret"}
USERS = {"freezer-02": "frz-0002", "lora-th-01": "lora-th-01"}
TOPIC = uplink_topic("ds-mqtt", "FRZ-0002")
READING = {"ts": "2026-03-01T08:00:00Z", "readings": {"t": -18.0, "rh": 55}, "door": "closed"}
EM300_FRAME = bytes([1, 117, 50, 3, 103, 200, 0, 4, 104, 60])  # battery 50, 20.0 C, 30 %


def mqtt_catalog(samples_dir: Path, *, passwords: dict[str, str] | None = None,
                 disabled: frozenset[str] = frozenset(), revision: int = 1) -> Catalog:  # fmt: skip
    """The sample tenant (its ``mqtt`` data source and MQTT freezer) with a second MQTT device
    (the LoRaWAN probe, for a binary codec payload)."""
    issues: list[Any] = []
    entities = read_entities([samples_dir / "tenant"], issues)
    assert not issues
    passwords = {**PASSWORDS, **(passwords or {})}
    out: list[tuple[str, Any]] = []
    for source, entity in entities:
        if isinstance(entity, Asset) and entity.id in USERS:
            credentials = MqttCredentials(username=USERS[entity.id], password=passwords[entity.id])
            entity = entity.model_copy(update={
                "protocol": AssetProtocol(type="mqtt", mqtt=credentials),
                "enabled": entity.id not in disabled,
            })  # fmt: skip
        out.append((source, entity))
    assert any(isinstance(e, DataSource) and e.id == "ds-mqtt" for _, e in out)  # the sample's
    return dataclasses.replace(build_catalog(out, compile_scripts=False), revision=revision)


@dataclass
class Config:
    """The configuration the broker's device sync and the ingress read (a test changes it)."""

    catalog: Catalog
    revision: int = 1


@dataclass
class Device:
    """A paho-mqtt client on its own network thread, recording what the broker said."""

    port: int
    username: str
    password: str
    client_id: str
    connects: list[str] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    client: mqtt.Client | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *, reconnect: bool = False) -> Device:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False)  # fmt: skip
        client.username_pw_set(self.username, self.password)
        client.on_connect = lambda c, u, f, rc, p: self.connects.append(str(rc))
        client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(time.monotonic())

        def published(c: Any, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
            with self.lock:
                self.acked.add(mid)

        client.on_publish = published
        if not reconnect:
            client.reconnect_delay_set(60, 60)  # a refused device stays out (the test looks)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        self.client = client
        wait(lambda: bool(self.connects))
        return self

    def publish(self, payload: bytes, *, qos: int = 1, topic: str = TOPIC) -> int:
        assert self.client is not None
        return int(self.client.publish(topic, payload, qos=qos).mid)

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def wait(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningNats]:
    with start_nats(store_dir=tmp_path / "nats", roles=nats_roles(NatsSettings()),
                    mqtt=MqttListener()) as server:  # fmt: skip
        yield server


@dataclass
class Harness:
    server: RunningNats
    config: Config
    sync: DeviceSync
    app: IngressApp
    admin: JetStreamBus
    kept: list[dict[str, Any]]

    @property
    def port(self) -> int:
        assert self.server.mqtt is not None
        return self.server.mqtt.port

    def device(self, asset_id: str = "freezer-02", password: str | None = None,
               **kw: Any) -> Device:  # fmt: skip
        name = USERS[asset_id]
        return Device(self.port, name, password or PASSWORDS[asset_id], f"{name}-client").start(
            **kw
        )

    def change(self, catalog: Catalog) -> None:
        """What ``eventray apply`` does: a new revision the broker's users and the ingress
        follow."""
        self.config.revision += 1
        self.config.catalog = dataclasses.replace(catalog, revision=self.config.revision)

    async def events(self, expected: int, timeout_s: float = 20.0) -> list[Any]:
        """The stream's messages once it holds ``expected`` (fewer after the timeout)."""
        js, deadline = self.admin.js, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (await js.stream_info(self.admin.stream)).state.messages >= expected:
                break
            await asyncio.sleep(0.05)
        info = await js.stream_info(self.admin.stream)
        return [await js.get_msg(self.admin.stream, seq) for seq in
                range(info.state.first_seq, info.state.last_seq + 1)] if info.state.messages else []  # fmt: skip


@contextlib.asynccontextmanager
async def harness(broker: RunningNats, samples_dir: Path) -> AsyncIterator[Harness]:
    config = Config(mqtt_catalog(samples_dir))
    admin = JetStreamBus(url=broker.url)
    await admin.connect()
    await admin.ensure_stream(storage="file")
    assert broker.mqtt is not None
    assert mqtt_login("127.0.0.1", broker.mqtt.port, MQTT_PROBE, broker.passwords[MQTT_PROBE]) == 0
    await ensure_bridge_consumer(admin.js)
    sync = DeviceSync(lambda: broker, lambda: (config.catalog, config.revision), cost=4,
                      interval_s=0.2)  # fmt: skip
    sync.start()
    ingress = JetStreamBus(url=broker.url_for("ingress"), inbox_prefix="_INBOX.ingress")
    await ingress.connect()
    settings = IngressSettings(port=0)

    def policy() -> IngressPolicy:
        return IngressPolicy(config.catalog, partitions=2, subject_prefix=ingress.subject_prefix,
                             max_body_bytes=settings.max_body_bytes)  # fmt: skip

    kept: list[dict[str, Any]] = []

    async def keep(rows: dict[str, list[tuple[Any, ...]]]) -> None:
        kept.extend(as_dicts({"events_raw": rows["events_raw"]})["events_raw"])

    rows = RowContext.from_catalog(config.catalog, RetentionPolicy())
    app = IngressApp(stream=ingress, policy=policy(), rows=rows, settings=settings,
                     partitions=2, keep=keep, lag_interval_s=0.2, mqtt=True)  # fmt: skip
    await app.start()
    seen = config.revision

    async def follow() -> None:  # the ingress actor's reload on a config change
        nonlocal seen
        while True:
            if config.revision != seen:
                seen = config.revision
                app.use(policy(), rows)
            await asyncio.sleep(0.05)

    follower = asyncio.create_task(follow())
    try:
        yield Harness(broker, config, sync, app, admin, kept)
    finally:
        follower.cancel()
        sync.stop()
        await app.stop()
        await ingress.close()
        await admin.close()


def test_qos0_and_qos1_uplinks_reach_the_stream_bound_by_topic(
    broker: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(broker, samples_dir) as h:
            device = await asyncio.to_thread(h.device)
            assert device.connects == ["Success"]
            try:
                mid = device.publish(orjson.dumps(READING), qos=1)
                await asyncio.to_thread(wait, lambda: mid in device.acked)
                device.publish(orjson.dumps({**READING, "door": "open"}), qos=0)
                messages = await h.events(2)
            finally:
                device.stop()
            assert len(messages) == 2
            bodies = sorted(orjson.loads(m.data)["door"] for m in messages)
            assert bodies == ["closed", "open"]
            for m in messages:  # bound by the topic: no deviceId in the body
                assert m.headers[HEADER_ASSET] == "freezer-02"
                assert m.headers[HEADER_ORG] == "alpha-cold-room-1"
                assert len(m.headers["Nats-Msg-Id"]) == 32
            assert h.app.mqtt_counts["accepted"] == 2

    asyncio.run(scenario())


def test_wrong_password_is_refused_and_a_foreign_topic_is_dropped(
    broker: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(broker, samples_dir) as h:
            intruder = await asyncio.to_thread(h.device, password="not-the-password")
            intruder.stop()
            assert intruder.connects == ["Not authorized"]
            device = await asyncio.to_thread(h.device)
            try:
                # another device's topic, another data source's, and a topic outside the scheme
                for topic in (uplink_topic("ds-mqtt", "24E124136B316241"),
                              uplink_topic("ds-other", "FRZ-0002"), "eventray/in/p0"):  # fmt: skip
                    device.publish(b'{"forged": true}', topic=topic)
                mid = device.publish(orjson.dumps(READING))
                await asyncio.to_thread(wait, lambda: mid in device.acked)
                messages = await h.events(1)
                await asyncio.sleep(0.5)  # what else could arrive, would have by now
                messages = await h.events(1)
            finally:
                device.stop()
            assert [orjson.loads(m.data) for m in messages] == [READING]
            log = (broker.store_dir / "nats-server.log").read_text()
            assert log.count("Publish Violation") >= 3  # the broker logged each forged publish

    asyncio.run(scenario())


def test_revocation_disconnects_within_seconds_and_refuses_the_next_login(
    broker: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(broker, samples_dir) as h:
            device = await asyncio.to_thread(h.device, reconnect=True)
            probe = await asyncio.to_thread(h.device, "lora-th-01", reconnect=True)
            try:
                # a changed password: the connected client is dropped, the old one refused
                changed = time.monotonic()
                h.change(mqtt_catalog(samples_dir, passwords={"freezer-02": "a-new-password!"}))
                assert await asyncio.to_thread(wait, lambda: bool(device.disconnects), 5.0)
                assert device.disconnects[0] - changed < 5.0
                assert await asyncio.to_thread(wait, lambda: "Not authorized" in device.connects)
                fresh = await asyncio.to_thread(h.device, password="a-new-password!")
                assert fresh.connects == ["Success"]
                fresh.stop()
                # the asset disabled: the same
                disabled = time.monotonic()
                h.change(mqtt_catalog(samples_dir, disabled=frozenset({"lora-th-01"})))
                assert await asyncio.to_thread(wait, lambda: bool(probe.disconnects), 5.0)
                assert probe.disconnects[0] - disabled < 5.0
            finally:
                device.stop()
                probe.stop()

    asyncio.run(scenario())


def test_a_binary_payload_reaches_the_stream_as_bytes_for_the_codec(
    broker: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(broker, samples_dir) as h:
            probe = await asyncio.to_thread(h.device, "lora-th-01")
            try:
                topic = uplink_topic("ds-mqtt", "24E124136B316241")
                mid = probe.publish(EM300_FRAME, topic=topic)
                await asyncio.to_thread(wait, lambda: mid in probe.acked)
                messages = await h.events(1)
            finally:
                probe.stop()
            assert [m.data for m in messages] == [EM300_FRAME]
            assert messages[0].headers[HEADER_ASSET] == "lora-th-01"

    asyncio.run(scenario())


def test_a_reconnect_resumes_and_a_burst_of_1000_qos1_uplinks_is_all_stored(
    broker: RunningNats, samples_dir: Path
) -> None:
    async def scenario() -> None:
        async with harness(broker, samples_dir) as h:
            device = await asyncio.to_thread(h.device, reconnect=True)
            try:
                first = device.publish(orjson.dumps({**READING, "n": -1}))
                await asyncio.to_thread(wait, lambda: first in device.acked)
                assert device.client is not None
                device.client.reconnect()  # the same session (clean_session=False) resumes
                assert await asyncio.to_thread(wait, lambda: len(device.connects) == 2)
                mids = [device.publish(orjson.dumps({**READING, "n": n})) for n in range(1000)]
                assert await asyncio.to_thread(wait, lambda: set(mids) <= device.acked, 60.0), (
                    f"{len(set(mids) - device.acked)} not acknowledged"
                )
                messages = await h.events(1001, timeout_s=60)
            finally:
                device.stop()
            numbers = sorted(orjson.loads(m.data)["n"] for m in messages)
            assert numbers == list(range(-1, 1000))  # each once: nothing lost, nothing twice

    asyncio.run(scenario())


def test_configuration_that_cannot_work_is_refused_at_load(samples_dir: Path) -> None:
    good = mqtt_catalog(samples_dir)
    asset = good.assets["freezer-01"]

    def refused(**update: Any) -> str:
        entities: list[tuple[str, Any]] = [("t", e) for kind in (good.orgs, good.data_sources,
            good.templates, good.assets, good.route_groups, good.triggers, good.rules,
            good.business_rules) for e in kind.values()]  # fmt: skip
        entities.append(
            ("t", asset.model_copy(update={"id": "extra", "asset_uuid": "X-1", **update}))
        )
        with pytest.raises(ConfigError) as caught:
            build_catalog(entities, compile_scripts=False)
        return str(caught.value)

    def mqtt_of(user: str, password: str) -> AssetProtocol:
        return AssetProtocol(type="mqtt", mqtt=MqttCredentials(username=user, password=password))

    assert "username also used by asset" in refused(protocol=mqtt_of("frz-0002", "long-enough-pw"))
    assert "reserved for the platform" in refused(protocol=mqtt_of("admin", "long-enough-pw"))
    assert "12 to 72 characters" in refused(protocol=mqtt_of("x-1", "short"))
    assert "needs {username, password}" in refused(protocol=AssetProtocol(type="mqtt"))
    assert "topic level" in refused(protocol=mqtt_of("x-1", "long-enough-pw"), asset_uuid="a/b")
    # an mqtt asset in an organization no mqtt data source reaches
    assert "no mqtt data source" in refused(protocol=mqtt_of("x-1", "long-enough-pw"),
                                            org_id="depot-beta")  # fmt: skip
