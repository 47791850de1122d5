"""The StateStore contract, run against the in-memory twin and a real Redis-compatible server.

Both adapters must behave identically: what a rule partition sees after a crash, a
redelivery or a restart cannot depend on which store it runs on. The Redis-only tests cover
what the twin cannot have: persistence across a server restart, a dead server, and the cost of
a load in round trips (measured on the wire, not assumed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from eventray.cluster.services.redis_server import RunningRedis, find_redis_servers, start_redis
from eventray.pipeline.adapters.memory_state import MemoryStateStore
from eventray.pipeline.adapters.redis_state import RedisStateStore
from eventray.pipeline.clock import ManualClock
from eventray.pipeline.errors import RetryableError, StateStoreError
from eventray.pipeline.ports import StateStore
from eventray.pipeline.rules.engine import RuleEngine, RuleSet, state_key
from tests.unit.rulekit import ORG_PATHS, event
from tests.unit.test_rules_patterns import COOLDOWN, COOLDOWN_BR

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(data_dir=tmp_path_factory.mktemp("redis"), persist=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStateStore()
        return
    server: RunningRedis = request.getfixturevalue("redis_server")
    redis_store = RedisStateStore(url=server.url, key_prefix=f"test-{uuid.uuid4().hex}:")
    try:
        yield redis_store
    finally:
        redis_store.close()


@pytest.fixture
def partition() -> str:
    return f"p-{uuid.uuid4().hex}"


@pytest.fixture
def new_redis(tmp_path: Path) -> Iterator[Callable[..., RunningRedis]]:
    """Start private servers for one test; every one is stopped at teardown."""
    started: list[RunningRedis] = []

    def start(*, persist: bool, binary: str | None = None) -> RunningRedis:
        server = start_redis(data_dir=tmp_path / "data", persist=persist, binary=binary)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def typed(value: Any) -> Any:
    """``value`` with every scalar tagged by its type: 1, 1.0 and True compare equal in Python,
    but a counter that comes back as a float (or a flag as an int) is a bug."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


# ------------------------------------------------------------------------ the contract


def test_missing_keys_are_absent_from_the_snapshot(store: StateStore, partition: str) -> None:
    empty = store.load(["a", "b"], partition=partition)
    assert (empty.values, empty.applied_seq) == ({}, 0)

    assert store.commit({"a": 1}, partition=partition, seq=0) is True
    assert store.load(["a", "b", "c"], partition=partition).values == {"a": 1}


def test_values_round_trip_with_their_types(store: StateStore, partition: str) -> None:
    values: dict[str, Any] = {
        "int": 3,
        "zero": 0,
        "negative": -7,
        "big": 2**62,
        "float": 2.5,
        "whole-float": 1.0,
        "text": "héllo ✓ \"quoted\" 'x'",
        "numeric-text": "42",
        "true": True,
        "false": False,
        "empty": "",
        "nested": {"list": [1, 2.0, "x", None, {"flag": False}], "n": {"deep": 0.1}},
    }
    assert store.commit(values, partition=partition, seq=1) is True
    snapshot = store.load(sorted(values), partition=partition)
    assert typed(snapshot.values) == typed(values)


def test_one_commit_of_a_thousand_keys_then_one_load(store: StateStore, partition: str) -> None:
    writes = {f"state:org-{i % 7}:br-{i}:counter": i if i % 2 else i + 0.5 for i in range(1000)}
    assert store.commit(writes, partition=partition, seq=10) is True

    wanted = [*writes, "state:org-0:br-missing:counter"]
    snapshot = store.load(wanted, partition=partition)
    assert len(snapshot.values) == 1000
    assert typed(snapshot.values) == typed(writes)
    assert snapshot.applied_seq == 10


def test_fence_refuses_equal_and_older_sequences(store: StateStore, partition: str) -> None:
    assert store.commit({"k": 1}, partition=partition, seq=5) is True
    assert store.commit({"k": 2}, partition=partition, seq=5) is False
    assert store.commit({"k": 3}, partition=partition, seq=4) is False
    snapshot = store.load(["k"], partition=partition)
    assert (snapshot.values, snapshot.applied_seq) == ({"k": 1}, 5)

    assert store.commit({"k": "now text"}, partition=partition, seq=6) is True
    snapshot = store.load(["k"], partition=partition)
    assert (snapshot.values, snapshot.applied_seq) == ({"k": "now text"}, 6)


def test_partitions_have_independent_fences(store: StateStore, partition: str) -> None:
    other = partition + "-other"
    assert store.commit({"a": 1}, partition=partition, seq=100) is True
    assert store.commit({"b": 2}, partition=other, seq=1) is True
    assert store.commit({"b": 3}, partition=other, seq=1) is False

    assert store.load([], partition=partition).applied_seq == 100
    assert store.load(["a", "b"], partition=other).applied_seq == 1
    assert store.load(["a", "b"], partition=other).values == {"a": 1, "b": 2}


def test_sequence_zero_applies_without_checking_or_moving_the_fence(
    store: StateStore, partition: str
) -> None:
    assert store.commit({"k": 1}, partition=partition, seq=7) is True
    assert store.commit({"k": 2}, partition=partition, seq=0) is True
    assert store.commit({"k": 3}, partition=partition, seq=0) is True
    snapshot = store.load(["k"], partition=partition)
    assert (snapshot.values, snapshot.applied_seq) == ({"k": 3}, 7)

    fresh = partition + "-fresh"
    assert store.commit({"j": True}, partition=fresh, seq=0) is True
    assert store.load(["j"], partition=fresh).applied_seq == 0


def test_applied_seq_follows_commits_even_without_writes(store: StateStore, partition: str) -> None:
    assert store.load([], partition=partition).applied_seq == 0
    # a batch whose events changed nothing still records that it was applied
    assert store.commit({}, partition=partition, seq=42) is True
    snapshot = store.load([], partition=partition)
    assert (snapshot.values, snapshot.applied_seq) == ({}, 42)
    assert store.commit({}, partition=partition, seq=42) is False


def test_fence_is_exact_beyond_float_precision(store: StateStore, partition: str) -> None:
    # JetStream sequences are uint64; 2**53 + 1 is the first integer a double cannot hold,
    # so a numeric compare in Lua would call it equal to 2**53 and refuse it.
    assert store.commit({"k": 1}, partition=partition, seq=2**53) is True
    assert store.commit({"k": 2}, partition=partition, seq=2**53 + 1) is True
    assert store.commit({"k": 3}, partition=partition, seq=2**53 + 1) is False
    assert store.commit({"k": 4}, partition=partition, seq=2**64 - 1) is True
    assert store.commit({"k": 5}, partition=partition, seq=2**64 - 2) is False
    snapshot = store.load(["k"], partition=partition)
    assert (snapshot.values, snapshot.applied_seq) == ({"k": 4}, 2**64 - 1)


def test_a_refused_commit_leaves_every_key_as_it_was(store: StateStore, partition: str) -> None:
    assert store.commit({"a": 1, "b": "two"}, partition=partition, seq=10) is True
    refused = {"a": 100, "b": "changed", "c": "new key"}
    assert store.commit(refused, partition=partition, seq=9) is False
    snapshot = store.load(["a", "b", "c"], partition=partition)
    assert typed(snapshot.values) == typed({"a": 1, "b": "two"})
    assert snapshot.applied_seq == 10


# ------------------------------------------------------------------------ Redis only


@pytest.mark.parametrize("binary", find_redis_servers(), ids=lambda path: Path(path).name)
def test_state_survives_a_server_restart_with_persist(
    new_redis: Callable[..., RunningRedis], binary: str
) -> None:
    first = new_redis(persist=True, binary=binary)
    assert first.port != 6379
    admin = redis.Redis.from_url(first.url)
    try:
        assert admin.config_get("bind") == {"bind": "127.0.0.1"}
    finally:
        admin.close()
    writer = RedisStateStore(url=first.url)
    try:
        assert writer.commit({"counter": 3, "last": "2026-01-01"}, partition="p0", seq=17)
    finally:
        writer.close()
    first.stop()

    second = new_redis(persist=True, binary=binary)
    reader = RedisStateStore(url=second.url)
    try:
        snapshot = reader.load(["counter", "last"], partition="p0")
        assert typed(snapshot.values) == typed({"counter": 3, "last": "2026-01-01"})
        assert snapshot.applied_seq == 17
        assert reader.commit({"counter": 4}, partition="p0", seq=17) is False
    finally:
        reader.close()


def test_a_stopped_server_raises_a_retryable_state_store_error(
    new_redis: Callable[..., RunningRedis],
) -> None:
    server = new_redis(persist=False)
    store = RedisStateStore(url=server.url, socket_timeout_s=0.5)
    try:
        assert store.commit({"k": 1}, partition="p0", seq=1) is True
        server.stop()
        with pytest.raises(StateStoreError) as loaded:
            store.load(["k"], partition="p0")
        with pytest.raises(StateStoreError) as committed:
            store.commit({"k": 2}, partition="p0", seq=2)
    finally:
        store.close()
    shown = server.url.replace(f":{server.password}@", ":***@")  # never the password
    for error, operation in ((loaded.value, "load"), (committed.value, "commit")):
        assert isinstance(error, RetryableError)
        assert server.password not in str(error)
        assert error.retryable is True
        assert f"rule state {operation} failed: Redis at {shown}" in str(error)
        assert isinstance(error.__cause__, RedisConnectionError)


def _command_calls(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {name: int(stat["calls"]) for name, stat in stats.items() if name != "cmdstat_info"}


def test_load_and_commit_are_one_round_trip_each(
    redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted twice: requests written and replies read by redis-py's connection, and the
    commands the server executed (INFO commandstats, from another connection)."""
    store = RedisStateStore(url=redis_server.url, key_prefix=f"rt-{uuid.uuid4().hex}:")
    admin = redis.Redis.from_url(redis_server.url)
    keys = [f"state:org:br:{i}" for i in range(500)]
    wire = {"sent": 0, "read": 0}
    send, read = redis.connection.Connection.send_packed_command, redis.Connection.read_response

    def counting_send(self: redis.Connection, *args: Any, **kwargs: Any) -> None:
        wire["sent"] += 1
        send(self, *args, **kwargs)

    def counting_read(self: redis.Connection, *args: Any, **kwargs: Any) -> Any:
        wire["read"] += 1
        return read(self, *args, **kwargs)

    def measure(action: Callable[[], object]) -> tuple[dict[str, int], dict[str, int]]:
        before = _command_calls(admin)
        wire.update(sent=0, read=0)
        with monkeypatch.context() as patch:
            patch.setattr(redis.connection.Connection, "send_packed_command", counting_send)
            patch.setattr(redis.connection.Connection, "read_response", counting_read)
            action()
        after = _command_calls(admin)
        executed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        return dict(wire), executed

    try:
        # warm up: the first use opens the connection (handshake) and loads the script
        store.commit({keys[0]: 1}, partition="p0", seq=1)
        store.load(keys, partition="p0")

        sent_read, executed = measure(lambda: store.load(keys, partition="p0"))
        assert sent_read == {"sent": 1, "read": 1}
        assert executed == {"cmdstat_mget": 1}

        writes = dict.fromkeys(keys, 2)
        sent_read, executed = measure(lambda: store.commit(writes, partition="p0", seq=2))
        assert sent_read == {"sent": 1, "read": 1}
        # inside the script: one GET of the fence, one SET per key and one for the fence
        assert executed == {"cmdstat_evalsha": 1, "cmdstat_get": 1, "cmdstat_set": 501}
    finally:
        admin.close()
        store.close()


def test_rule_engine_on_redis_reports_a_resubmitted_batch_as_replayed(
    redis_server: RunningRedis,
) -> None:
    store = RedisStateStore(url=redis_server.url, key_prefix=f"eng-{uuid.uuid4().hex}:")
    clock = ManualClock()
    engine = RuleEngine(
        RuleSet({COOLDOWN.id: COOLDOWN}, [COOLDOWN_BR], ORG_PATHS), store, clock=clock
    )
    counter = state_key("factory-alpha", COOLDOWN_BR.id, "counter")
    last_alert = state_key("factory-alpha", COOLDOWN_BR.id, "lastAlertAt")
    try:
        # -10 fires (at or above the -15 threshold, no earlier alert); -12 is inside the cooldown
        batch = [event({"temperature": -10}, seq=1), event({"temperature": -12}, seq=2)]
        first = engine.evaluate(batch, partition="p-eng")
        assert [x.message for e in first.evaluations for x in e.execs] == [
            "Alert #1: -10 on freezer-1"
        ]
        assert (first.committed, first.replayed) == (True, [])
        stored = store.load([counter, last_alert], partition="p-eng")
        assert typed(stored.values[counter]) == ("int", 1)
        assert stored.applied_seq == 2

        again = engine.evaluate(batch, partition="p-eng")
        assert again.replayed == [e.event_tracker_id for e in batch]
        assert (again.evaluations, again.writes) == ([], {})
        assert store.load([counter, last_alert], partition="p-eng") == stored

        # past the cooldown, the next alert counts on from the state read back from Redis
        clock.advance(seconds=700)
        later = engine.evaluate([event({"temperature": -9}, seq=3)], partition="p-eng")
        assert [x.message for e in later.evaluations for x in e.execs] == [
            "Alert #2: -9 on freezer-1"
        ]
        final = store.load([counter], partition="p-eng")
        assert (typed(final.values), final.applied_seq) == ({counter: ("int", 2)}, 3)
    finally:
        store.close()
