"""The embedded broker's MQTT devices, kept equal to the configuration.

The driver (the process that runs the embedded nats-server) compares the configuration's
revision every ``mqtt.sync_interval_s``; when it changed, it writes the devices' users
(:func:`eventray.pipeline.mqtt.accounts`) into the server's config and the server reloads it,
which also disconnects a device whose user is gone (asset disabled or deleted) or whose
password changed. So revocation takes at most the interval (1 s by default) plus the reload.

Passwords reach the broker as bcrypt hashes only. ``eventray apply`` hashes a plain password
before it stores the asset (:func:`hash_documents`), so the config store never holds one; a
directory of YAML files loaded as it is (``config_dir``) may, and those are hashed here, once
per process (hashing costs the same as a device's login: ``mqtt.bcrypt_cost``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import bcrypt

from eventray.cluster.services.nats_server import DeviceUser, RunningNats
from eventray.pipeline.catalog import Catalog
from eventray.pipeline.mqtt import accounts, is_password_hash

__all__ = ["DeviceSync", "hash_documents", "hash_password", "mqtt_login"]

_log = logging.getLogger(__name__)


def hash_password(password: str, cost: int) -> str:
    """A bcrypt hash of ``password`` (kept as it is when it is one already)."""
    if is_password_hash(password):
        return password
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def hash_documents(documents: list[dict[str, Any]], cost: int) -> list[dict[str, Any]]:
    """``documents`` with every asset's plain MQTT password replaced by its bcrypt hash."""
    out = []
    for doc in documents:
        credentials = (
            (doc.get("protocol") or {}).get("mqtt") if doc.get("kind") == "Asset" else None
        )
        password = credentials.get("password") if isinstance(credentials, dict) else None
        if (
            isinstance(credentials, dict)
            and isinstance(password, str)
            and not is_password_hash(password)
            and 12 <= len(password) <= 72
        ):
            protocol = {
                **doc["protocol"],
                "mqtt": {**credentials, "password": hash_password(password, cost)},
            }
            doc = {**doc, "protocol": protocol}
        out.append(doc)
    return out


def mqtt_login(
    host: str, port: int, username: str, password: str, *, timeout_s: float = 5.0
) -> int:
    """Log in over MQTT 3.1.1 and out again; returns the CONNACK's return code (0: accepted).

    The driver logs in once as :data:`~eventray.cluster.services.nats_server.MQTT_PROBE` so the
    server creates its MQTT store before the bridge's consumer is made on it (it does so at
    the first login). Written against the wire, ten lines, instead of starting a client's
    network thread for one packet."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return struct.pack("!H", len(raw)) + raw

    body = text("MQTT") + bytes([4, 0b11000010]) + struct.pack("!H", 10)
    body += text(f"eventray-probe-{threading.get_ident()}") + text(username) + text(password)
    packet = bytes([0x10, len(body)]) + body  # the body is shorter than 128 bytes
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(packet)
        connack = sock.recv(4)
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    if len(connack) < 4 or connack[0] != 0x20:
        raise ConnectionError(f"no CONNACK from the MQTT listener at {host}:{port}")
    return connack[3]


class DeviceSync:
    """Keeps :meth:`RunningNats.set_devices` equal to the stored configuration.

    Args:
        server: the running broker (a callable: the driver replaces it when it restarts one).
        load: the stored catalog and its revision.
        cost: bcrypt cost for passwords given in plain text.
        interval_s: how often the revision is compared.
    """

    def __init__(
        self,
        server: Callable[[], RunningNats],
        load: Callable[[], tuple[Catalog, int]],
        *,
        cost: int,
        interval_s: float,
    ) -> None:
        self._server = server
        self._load = load
        self._cost = cost
        self._interval_s = interval_s
        self._hashes: dict[bytes, str] = {}
        self._revision: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.devices = 0
        self.last_error = ""

    def sync(self) -> bool:
        """Bring the broker's devices to the stored configuration; whether it changed them."""
        catalog, revision = self._load()
        if revision == self._revision:
            return False
        users = []
        for account in accounts(catalog):
            users.append(
                DeviceUser(account.username, self._hash(account.password), account.subjects)
            )
        self._server().set_devices(tuple(sorted(users, key=lambda u: u.username)))
        self._revision = revision
        self.devices = len(users)
        return True

    def _hash(self, password: str) -> str:
        if is_password_hash(password):
            return password
        key = hashlib.sha256(password.encode()).digest()
        found = self._hashes.get(key)
        if found is None:
            found = self._hashes[key] = hash_password(password, self._cost)
        return found

    def start(self) -> None:
        """Sync now, then every ``interval_s`` on a daemon thread, until :meth:`stop`."""
        self.sync()
        self._thread = threading.Thread(target=self._run, name="mqtt-devices", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sync()
                self.last_error = ""
            except Exception as exc:  # an unreadable store now: the next round tries again
                if str(exc) != self.last_error:
                    _log.warning("MQTT devices not synced with the configuration: %s", exc)
                self.last_error = str(exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
