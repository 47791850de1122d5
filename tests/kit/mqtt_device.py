"""A simulated MQTT device (paho-mqtt): logs in with its asset's credentials and publishes
uplinks with QoS 1, counting the broker's acknowledgements (the demo's MQTT traffic).

The broker takes a device within ``mqtt.sync_interval_s`` of the ``apply`` that created it, so
a refused first login is tried again for a few seconds before it counts as refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["MqttReport", "publish_uplinks"]


@dataclass
class MqttReport:
    sent: int = 0
    acknowledged: int = 0
    seconds: float = 0.0
    refused: str = ""
    """Why the broker refused the login ("" if it took it)."""


def _login(host: str, port: int, username: str, password: str, wait_s: float) -> mqtt.Client | str:
    deadline = time.monotonic() + wait_s
    answer = ""
    while True:
        answers: list[str] = []
        done = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{username}-sim")
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(100)

        def connected(c: object, u: object, f: object, rc: object, p: object,
                      answers: list[str] = answers, done: threading.Event = done) -> None:  # fmt: skip
            answers.append(str(rc))
            done.set()

        client.on_connect = connected
        client.reconnect_delay_set(30, 30)
        client.connect(host, port)
        client.loop_start()
        done.wait(5)
        answer = answers[0] if answers else "no answer"
        if answer == "Success":
            return client
        client.loop_stop()
        client.disconnect()
        if time.monotonic() >= deadline:
            return answer
        time.sleep(0.3)


def publish_uplinks(
    url: str, username: str, password: str, topic: str, payloads: Iterable[bytes],
    *, rate: float = 200.0, wait_s: float = 10.0,
) -> MqttReport:  # fmt: skip
    """Publish ``payloads`` (QoS 1) at about ``rate`` per second to the broker at ``url``
    (``mqtt://host:port``); returns once every publish was acknowledged (or 30 s after the
    last)."""
    parts = urlsplit(url)
    report = MqttReport()
    client = _login(parts.hostname or "127.0.0.1", parts.port or 1883, username, password, wait_s)
    if isinstance(client, str):
        report.refused = client
        return report
    acked = threading.Semaphore(0)
    client.on_publish = lambda c, u, mid, rc, p: acked.release()
    started = time.monotonic()
    try:
        for n, payload in enumerate(payloads):
            client.publish(topic, payload, qos=1)
            report.sent += 1
            pause = started + (n + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        deadline = time.monotonic() + 30
        while report.acknowledged < report.sent and acked.acquire(
            timeout=max(0.0, deadline - time.monotonic())
        ):
            report.acknowledged += 1
    finally:
        report.seconds = time.monotonic() - started
        client.disconnect()
        client.loop_stop()
    return report
