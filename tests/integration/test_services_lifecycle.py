"""The embedded servers' lives: they die with the process that started them (even when it is
killed with kill -9), and one that died is started again on its port and its data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventray.cluster.services.nats_server import start_nats
from eventray.cluster.services.procs import wait_until
from eventray.cluster.services.redis_server import start_redis
from eventray.pipeline.adapters.nats_bus import JetStreamBus

pytestmark = pytest.mark.services

OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from eventray.cluster.services.nats_server import start_nats
    from eventray.cluster.services.redis_server import start_redis

    data = Path(sys.argv[1])
    nats = start_nats(store_dir=data / "nats")
    valkey = start_redis(data_dir=data / "redis", persist=True)
    print(nats.process.pid, valkey.process.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as stat:  # a zombie is dead, only not reaped yet
        return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"


@contextlib.contextmanager
def owner_of_servers(data: Path) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data)], stdout=subprocess.PIPE, text=True
    )
    servers: list[int] = []
    try:
        assert owner.stdout is not None
        servers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(servers) == 2, "the owner did not start both servers"
        yield owner, servers
    finally:
        owner.kill()
        owner.wait(timeout=10)
        if owner.stdout is not None:
            owner.stdout.close()
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_servers_die_with_an_owner_killed_by_sigkill(tmp_path: Path) -> None:
    with owner_of_servers(tmp_path) as (owner, servers):
        assert all(_alive(pid) for pid in servers)
        owner.kill()  # SIGKILL: no atexit, no finally, no chance to stop anything
        owner.wait(timeout=10)
        assert wait_until(lambda: not any(_alive(pid) for pid in servers), timeout_s=3)


def test_valkey_started_again_keeps_its_port_and_state(tmp_path: Path) -> None:
    server = start_redis(data_dir=tmp_path / "redis", persist=True)
    try:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("counter", 41)
            client.incr("counter")
            # With appendfsync everysec a write normally reaches the AOF before its reply, but
            # Redis postpones it (up to 2 s) while a slow fsync runs, e.g. on a busy disk: wait
            # until it is on disk, then kill. (That window is appendfsync everysec's known
            # loss on a crash; README, "Durability".)
            try:
                client.execute_command("WAITAOF", 1, 0, 5000)
            except redis.ResponseError:  # before Redis/Valkey 7.2: one fsync period and more
                time.sleep(2.5)
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            server = server.restarted()
            assert server.answers_ping()
            assert client.get("counter") == b"42"  # same URL: the client just reconnects
        finally:
            client.close()
    finally:
        server.stop()


def test_nats_started_again_keeps_its_port_and_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = start_nats(store_dir=tmp_path / "nats", sync_interval="2m")
        try:
            name = f"T{uuid.uuid4().hex[:8]}"
            bus = JetStreamBus(url=server.url, stream=name, subject_prefix=f"t.{name.lower()}")
            await bus.connect()
            await bus.ensure_stream(storage="file")
            await bus.publish(f"{bus.subject_prefix}.p0", b"{}", msg_id="trk-1")
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            port = server.port
            server = server.restarted()
            assert (server.port, server.sync_interval) == (port, "2m")
            source = await bus.source(0)
            deadline = time.monotonic() + 20
            batch = []
            while not batch and time.monotonic() < deadline:
                with contextlib.suppress(Exception):  # until the bus has reconnected
                    batch = await source.fetch(10, timeout_s=1, linger_s=0.05)
            assert [item.event_tracker_id for item in batch] == ["trk-1"]
            await source.close()
            await bus.close()
        finally:
            server.stop()

    asyncio.run(scenario())


def test_the_embedded_valkey_refuses_clients_without_its_password(tmp_path: Path) -> None:
    """Loopback keeps other machines out, not other local users: without the password
    generated at start, nobody reads or writes rule state; the password is not on the
    command line (readable by every local user) and survives a restart."""
    import socket

    import psutil

    with start_redis(data_dir=tmp_path / "redis", persist=True) as server:
        assert server.password and f":{server.password}@" in server.url
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            sock.sendall(b"GET anything\r\n")
            assert sock.recv(64).startswith(b"-NOAUTH")
        assert server.password not in " ".join(psutil.Process(server.pid).cmdline())
        assert (server.data_dir / "auth.conf").stat().st_mode & 0o077 == 0
        again = server.restarted()
        try:
            assert again.password == server.password and again.answers_ping()
        finally:
            again.stop()


def test_the_embedded_nats_refuses_clients_without_its_password(tmp_path: Path) -> None:
    """Without the password generated at start, nobody publishes into a partition or reads
    the tenants' traffic; the password survives a restart on the same store."""
    import socket

    with start_nats(store_dir=tmp_path / "nats") as server:
        assert server.password and f":{server.password}@" in server.url
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            sock.recv(4096)  # INFO
            sock.sendall(b'CONNECT {"verbose":false}\r\nPUB eventray.in.p0 2\r\n{}\r\nPING\r\n')
            answer = b""
            while b"Authorization Violation" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert b"Authorization Violation" in answer
        assert (server.store_dir / "nats-server.conf").stat().st_mode & 0o077 == 0
        again = server.restarted()
        try:
            assert again.password == server.password and again.url == server.url
        finally:
            again.stop()
