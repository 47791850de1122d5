"""Per-role users on the embedded servers: each role can do its work and nothing that is
another's. The refusals are checked on the raw NATS protocol (the server answers a refused
operation with ``-ERR 'Permissions Violation ...'`` before the PONG of a following PING), the
work with the project's own bus and state store over each role's URL."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventray.cluster.replaying import stack_partitions
from eventray.cluster.roles import VALKEY_USERS, inbox_of, nats_roles
from eventray.cluster.services.nats_server import RunningNats, start_nats
from eventray.cluster.services.redis_server import start_redis
from eventray.config.settings import NatsSettings
from eventray.pipeline.adapters.nats_archive import JetStreamArchive
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.adapters.redis_state import RedisStateStore
from eventray.pipeline.ports import OutboxMessage

pytestmark = pytest.mark.services

SETTINGS = NatsSettings()
STREAM, PREFIX, TRIGGERS = SETTINGS.stream, SETTINGS.subject_prefix, SETTINGS.trigger_subject


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[RunningNats]:
    roles = nats_roles(SETTINGS, partitions=2)
    with start_nats(store_dir=tmp_path / "nats", roles=roles) as server:

        async def create_stream() -> None:
            admin = JetStreamBus(url=server.url, stream=STREAM, subject_prefix=PREFIX)
            await admin.connect()
            try:
                await admin.ensure_stream(storage="memory", extra_subjects=(TRIGGERS,))
            finally:
                await admin.close()

        asyncio.run(create_stream())
        yield server


def refused(server: RunningNats, user: str, operations: list[str]) -> list[str]:
    """The operations (``PUB subject`` or ``SUB subject``) the server refuses to ``user``, in
    the form of its answers: ``Publish to "x"`` / ``Subscription to "x"``."""
    wire = ""
    for number, operation in enumerate(operations, start=1):
        verb, subject = operation.split(" ")
        wire += f"PUB {subject} 0\r\n\r\n" if verb == "PUB" else f"SUB {subject} {number}\r\n"
    password = server.passwords[user]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        connect = f'CONNECT {{"verbose":false,"user":"{user}","pass":"{password}"}}\r\n'
        sock.sendall(f"{connect}{wire}PING\r\n".encode())
        answer = b""
        while not answer.endswith(b"PONG\r\n"):
            chunk = sock.recv(4096)
            assert chunk, f"the server closed the connection: {answer!r}"
            answer += chunk
    assert b"Authorization Violation" not in answer
    prefix = "-ERR 'Permissions Violation for "
    return [
        line[len(prefix) : -1] for line in answer.decode().splitlines() if line.startswith(prefix)
    ]


def test_the_ingress_may_publish_events_but_not_consume_them_nor_queue_triggers(
    nats_server: RunningNats,
) -> None:
    operations = [
        f"PUB {PREFIX}.p0",  # its work
        f"PUB $JS.API.CONSUMER.INFO.{STREAM}.lane-p0",  # the lag it reads
        f"SUB {inbox_of('ingress')}.abc.*",  # its own replies
        f"SUB {SETTINGS.config_subject}",
        f"PUB $JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0",  # consume a partition
        f"PUB $JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.mine",
        f"PUB $JS.ACK.{STREAM}.lane-p0.1.1.1.1.0",
        f"PUB {TRIGGERS}",  # forge a trigger delivery
        f"PUB {SETTINGS.config_subject}",
        f"PUB $JS.API.STREAM.PURGE.{STREAM}",
        f"SUB {inbox_of('lane')}.>",  # read the lanes' deliveries
        "SUB _INBOX.>",
        "SUB >",
    ]
    assert refused(nats_server, "ingress", operations) == [
        f'Publish to "$JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0"',
        f'Publish to "$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.mine"',
        f'Publish to "$JS.ACK.{STREAM}.lane-p0.1.1.1.1.0"',
        f'Publish to "{TRIGGERS}"',
        f'Publish to "{SETTINGS.config_subject}"',
        f'Publish to "$JS.API.STREAM.PURGE.{STREAM}"',
        f'Subscription to "{inbox_of("lane")}.>"',
        'Subscription to "_INBOX.>"',
        'Subscription to ">"',
    ]


def test_a_lane_may_consume_and_queue_triggers_but_not_publish_into_a_partition(
    nats_server: RunningNats,
) -> None:
    operations = [
        f"PUB $JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0",  # its work
        f"PUB $JS.ACK.{STREAM}.lane-p0.1.1.1.1.0",
        f"PUB $JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.lane-p0",
        f"PUB $JS.API.CONSUMER.DELETE.{STREAM}.lane-p0",
        f"PUB {TRIGGERS}",
        "PUB hot.events",  # a publish route
        f"SUB {inbox_of('lane')}.abc.*",
        f"SUB {SETTINGS.config_subject}",
        f"PUB {PREFIX}.p0",  # inject an event without an API key
        f"PUB {PREFIX}.p1",
        f"PUB {SETTINGS.config_subject}",
        f"PUB {inbox_of('ingress')}.abc.1",  # forge a JetStream acknowledgement
        f"PUB $JS.API.STREAM.PURGE.{STREAM}",
        f"PUB $JS.API.STREAM.DELETE.{STREAM}",
        f"PUB $JS.API.STREAM.MSG.DELETE.{STREAM}",
        f"SUB {inbox_of('ingress')}.>",
    ]
    assert refused(nats_server, "lane", operations) == [
        f'Publish to "{PREFIX}.p0"',
        f'Publish to "{PREFIX}.p1"',
        f'Publish to "{SETTINGS.config_subject}"',
        f'Publish to "{inbox_of("ingress")}.abc.1"',
        f'Publish to "$JS.API.STREAM.PURGE.{STREAM}"',
        f'Publish to "$JS.API.STREAM.DELETE.{STREAM}"',
        f'Publish to "$JS.API.STREAM.MSG.DELETE.{STREAM}"',
        f'Subscription to "{inbox_of("ingress")}.>"',
    ]


def test_each_role_does_its_work_with_its_own_credential(nats_server: RunningNats) -> None:
    """What the ingress and a lane do, through the project's bus on their own URLs: the
    server logs no violation (a refused operation would show there)."""

    def bus(role: str) -> JetStreamBus:
        url = nats_server.url_for(role)
        return JetStreamBus(url=url, inbox_prefix=f"_INBOX.{role}", stream=STREAM)

    async def scenario() -> None:
        ingress, lane = bus("ingress"), bus("lane")
        await ingress.connect()
        await lane.connect()
        heard: list[str] = []

        async def changed() -> None:
            heard.append("reload")

        try:
            await ingress.watch_config(changed)
            await lane.watch_config(changed)
            events = [OutboxMessage(f"{PREFIX}.p0", b'{"n": %d}' % n, f"trk-{n}") for n in range(3)]
            assert await ingress.append(events, timeout_s=5) == ["", "", ""]
            source = await lane.source(0)
            batch = await source.fetch(10, timeout_s=2, linger_s=0.05)
            assert [item.event_tracker_id for item in batch] == ["trk-0", "trk-1", "trk-2"]
            await source.ack_through(batch[-1])  # not confirmed: the server applies it soon
            for _ in range(100):
                if await ingress.pending(0) == 0:
                    break
                await asyncio.sleep(0.02)
            assert await ingress.pending(0) == 0
            outbox = lane.outbox()
            await outbox.enqueue([OutboxMessage(TRIGGERS, b"{}", f"grp-{uuid.uuid4().hex}")])
            await outbox.publish([OutboxMessage("hot.events", b"{}")])
            queue = await lane.queue("triggers", TRIGGERS, ack_wait_s=30, max_pending=10)
            [queued] = await queue.fetch(10, timeout_s=2)
            await queue.ack(queued)
            await queue.close()
            await source.close()
            admin = JetStreamBus(url=nats_server.url, stream=STREAM)
            await admin.connect()
            await admin.config_changed()
            await admin.close()
            for _ in range(50):
                if len(heard) == 2:
                    break
                await asyncio.sleep(0.05)
            assert heard == ["reload", "reload"]
        finally:
            await ingress.close()
            await lane.close()

    asyncio.run(scenario())
    log = nats_server.log.read_text()
    assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]


def test_role_passwords_are_their_own_and_survive_a_restart(nats_server: RunningNats) -> None:
    passwords = dict(nats_server.passwords)
    assert set(passwords) == {"admin", "ingress", "lane", "api", "replay"}
    assert len(set(passwords.values())) == 5
    assert (
        nats_server.url_for("lane")
        == f"nats://lane:{passwords['lane']}@127.0.0.1:{nats_server.port}"
    )
    again = nats_server.restarted()
    try:
        assert again.passwords == passwords and again.roles == nats_server.roles
        assert refused(again, "ingress", [f"PUB {PREFIX}.p0", f"PUB {TRIGGERS}"]) == [
            f'Publish to "{TRIGGERS}"'
        ]
    finally:
        again.stop()


def test_the_api_user_may_only_announce_config_changes_and_read_the_lag(
    nats_server: RunningNats,
) -> None:
    config = SETTINGS.config_subject
    info = f"$JS.API.CONSUMER.INFO.{STREAM}.lane-p0"
    assert refused(
        nats_server,
        "api",
        [
            f"PUB {config}",
            f"PUB {info}",
            f"PUB {PREFIX}.p0",
            f"PUB {TRIGGERS}",
            f"PUB $JS.API.CONSUMER.DELETE.{STREAM}.lane-p0",
            f"PUB $JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0",
            f"PUB $JS.API.STREAM.INFO.{STREAM}",
            f"SUB {config}",
            "SUB _INBOX.api.x",
            "SUB _INBOX.lane.x",
        ],
    ) == [
        f'Publish to "{PREFIX}.p0"',
        f'Publish to "{TRIGGERS}"',
        f'Publish to "$JS.API.CONSUMER.DELETE.{STREAM}.lane-p0"',
        f'Publish to "$JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0"',
        f'Publish to "$JS.API.STREAM.INFO.{STREAM}"',
        'Subscription to "_INBOX.lane.x"',
    ]


def test_the_replay_user_reads_the_stream_and_appends_copies_but_touches_no_lane(
    nats_server: RunningNats,
) -> None:
    """The replay actor's work through the project's archive on its own URL (read a range with
    a consumer of its own, a message by sequence, the bounds, append copies and a redriven
    delivery, the lanes' progress, the partition count), with no violation in the server's log;
    and what it may not do, on the raw protocol."""

    async def scenario() -> None:
        admin = JetStreamBus(url=nats_server.url, stream=STREAM, subject_prefix=PREFIX)
        await admin.connect()
        events = [OutboxMessage(f"{PREFIX}.p0", b'{"n": %d}' % n, f"trk-{n}") for n in range(3)]
        assert await admin.append(events, timeout_s=5) == ["", "", ""]
        await admin.own(0)  # the lane's durable consumer
        replay = JetStreamBus(url=nats_server.url_for("replay"), inbox_prefix="_INBOX.replay",
                              stream=STREAM, subject_prefix=PREFIX)  # fmt: skip
        await replay.connect()
        try:
            archive = JetStreamArchive(replay)
            bounds = await archive.bounds(f"{PREFIX}.p0")
            assert (bounds.first_seq, bounds.last_seq) == (1, 3)
            read = [m async for chunk in archive.read(f"{PREFIX}.p0", start_seq=1, end_seq=99)
                    for m in chunk]  # fmt: skip
            assert [m.body for m in read] == [e.body for e in events]
            got = await archive.get(f"{PREFIX}.p0", 2)
            assert got is not None and got.body == events[1].body
            copies = [OutboxMessage(f"{PREFIX}.p0", b"{}", "copy-1"),
                      OutboxMessage(TRIGGERS, b"{}", "delivery-1")]  # fmt: skip
            assert [a.error for a in await archive.append(copies)] == ["", ""]
            assert await archive.acknowledged(0) == 0
            assert await stack_partitions(replay, 7) == 1
        finally:
            await replay.close()
            await admin.close()

    asyncio.run(scenario())
    log = nats_server.log.read_text()
    assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]
    assert refused(
        nats_server,
        "replay",
        [
            f"PUB {PREFIX}.p1",
            f"PUB $JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0",
            f"PUB $JS.API.CONSUMER.DELETE.{STREAM}.lane-p1",
            f"PUB $JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.mine",
            f"PUB $JS.API.CONSUMER.CREATE.{STREAM}.lane-p0",
            f"PUB $JS.API.CONSUMER.CREATE.{STREAM}.lane-p1.{PREFIX}.p1",
            f"PUB $JS.API.STREAM.DELETE.{STREAM}",
            f"PUB $JS.API.STREAM.PURGE.{STREAM}",
            f"PUB {SETTINGS.config_subject}",
            "PUB eventray.mqtt.x",
            "SUB _INBOX.replay.x",
            "SUB _INBOX.lane.x",
            f"SUB {PREFIX}.p0",
        ],
    ) == [
        f'Publish to "$JS.API.CONSUMER.MSG.NEXT.{STREAM}.lane-p0"',
        f'Publish to "$JS.API.CONSUMER.DELETE.{STREAM}.lane-p1"',
        f'Publish to "$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.mine"',
        f'Publish to "$JS.API.CONSUMER.CREATE.{STREAM}.lane-p0"',
        f'Publish to "$JS.API.CONSUMER.CREATE.{STREAM}.lane-p1.{PREFIX}.p1"',
        f'Publish to "$JS.API.STREAM.DELETE.{STREAM}"',
        f'Publish to "$JS.API.STREAM.PURGE.{STREAM}"',
        f'Publish to "{SETTINGS.config_subject}"',
        'Publish to "eventray.mqtt.x"',
        'Subscription to "_INBOX.lane.x"',
        f'Subscription to "{PREFIX}.p0"',
    ]


def test_the_rules_user_of_valkey_reaches_rule_state_and_nothing_else(tmp_path: Path) -> None:
    with start_redis(data_dir=tmp_path / "redis", persist=True, users=VALKEY_USERS) as server:
        url = server.url_for("rules")
        assert url.startswith(f"redis://rules:{server.passwords['rules']}@")
        assert server.passwords["rules"] != server.password
        store = RedisStateStore(url=url)
        try:
            assert store.commit({"state:acme:br-1:count": 3}, partition="p0", seq=7)
            snapshot = store.load(["state:acme:br-1:count"], partition="p0")
            assert (snapshot.values, snapshot.applied_seq) == ({"state:acme:br-1:count": 3}, 7)
        finally:
            store.close()
        client = redis.Redis.from_url(url)
        admin = redis.Redis.from_url(server.url)
        try:
            admin.set("elsewhere", "x")
            for command in (
                ("GET", "elsewhere"),
                ("SET", "elsewhere", "y"),
                ("KEYS", "*"),
                ("FLUSHALL",),
                ("CONFIG", "GET", "requirepass"),
                ("ACL", "LIST"),
                ("EVAL", "return redis.call('SET', 'elsewhere', 'z')", "0"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
            assert admin.get("elsewhere") == b"x"
            again = server.restarted()  # the supervisor's restart keeps every password
            try:
                assert again.passwords == server.passwords
                assert client.mget(["state:acme:br-1:count"]) == [b"3"]
            finally:
                again.stop()
        finally:
            client.close()
            admin.close()
