"""Redis/Valkey StateStore: rule variables with one round trip per load and one per commit.

Why it is shaped this way:

- **Single writer per key.** Events are partitioned by orgId and one rule partition owns a
  partition, so no two processes write the same ``state:{orgId}:{businessRuleId}:{var}`` key.
  There is no need for optimistic locking (WATCH/MULTI retries); a batch only needs its writes
  applied together.
- **A fence for replay.** JetStream delivers at least once. Each partition has a fence key
  ``fence:{partition}`` holding the highest stream sequence already applied. One Lua script
  checks the fence, writes every key and moves the fence in the same atomic step, so a
  redelivered batch is refused whole and never increments a counter twice.
- **Batches, not keys.** ``load`` is a single MGET of every key plus the fence; ``commit`` is a
  single EVALSHA. Per-key round trips would cap a partition at a few thousand events/s.
- **JSON values.** Values are stored as JSON (orjson), so ints stay ints, floats stay floats, and
  text and booleans read back exactly as the in-memory twin
  (:class:`pipeline.adapters.memory_state.MemoryStateStore`) returns them.

This is the only module that imports redis-py for rule state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from eventray.pipeline.adapters.urls import redacted
from eventray.pipeline.errors import StateStoreError
from eventray.pipeline.ports import StateSnapshot, StateStore

__all__ = ["RedisStateStore"]

# KEYS[1] is the fence, KEYS[2..n] the state keys; ARGV[1] the batch's sequence as a decimal
# string ("0": no fence), ARGV[2..n] the JSON values. Sequences are compared as canonical decimal
# strings (length, then bytes) because Lua numbers are doubles and JetStream sequences are
# uint64: beyond 2**53 a numeric compare would call two different sequences equal.
_COMMIT_LUA: Final = """
local seq = ARGV[1]
if seq ~= '0' then
  local fence = redis.call('GET', KEYS[1])
  if fence and (#seq < #fence or (#seq == #fence and seq <= fence)) then
    return 0
  end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i])
end
if seq ~= '0' then
  redis.call('SET', KEYS[1], seq)
end
return 1
"""


class RedisStateStore(StateStore):
    """Rule state in Redis or Valkey, with the partition's sequence fence beside it.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``) of the server.
        key_prefix: prepended to every key, state and fence alike, so several deployments (or
            tests) can share one server without seeing each other's state.
        socket_timeout_s: connect and read timeout. A stalled server surfaces as a
            :class:`~pipeline.errors.StateStoreError` within roughly this time (plus two quick
            reconnect attempts), instead of blocking the partition.

    A failed commit whose outcome is unknown (a timeout after the script was sent) is safe to
    retry: writes are absolute values, and the fence makes the retry return False if the first
    attempt landed, which the engine reports as a replay.
    """

    def __init__(self, *, url: str, key_prefix: str = "", socket_timeout_s: float = 5.0) -> None:
        self._url = redacted(url)
        self._prefix = key_prefix
        # A couple of fast retries cover a pooled connection that went stale (server restart);
        # anything longer is the pipeline's decision, driven by the retryable error.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        )
        self._commit = self._client.register_script(_COMMIT_LUA)

    def load(self, keys: Sequence[str], *, partition: str) -> StateSnapshot:
        """Values for ``keys`` (absent keys are left out) and the partition's applied sequence.

        One MGET carries every key and the fence, so a batch costs one round trip however
        many keys it touches.

        Raises:
            StateStoreError: the server is unreachable, timed out or refused the command.
        """
        names = [self._prefix + key for key in keys]
        names.append(self._fence_key(partition))
        try:
            raw = cast(list[bytes | None], self._client.mget(names))
        except RedisError as exc:
            raise self._error("load", exc) from exc
        *stored, fence = raw
        values = {
            key: orjson.loads(value)
            for key, value in zip(keys, stored, strict=True)
            if value is not None
        }
        return StateSnapshot(values=values, applied_seq=int(fence) if fence is not None else 0)

    def commit(self, writes: Mapping[str, Any], *, partition: str, seq: int) -> bool:
        """Apply ``writes`` and record ``seq`` as the partition's fence, atomically.

        Args:
            writes: key -> JSON-serialisable value (absolute values, never deltas).
            partition: whose fence to check and move.
            seq: the batch's highest stream sequence; 0 applies the writes without checking or
                moving the fence.

        Returns:
            False, applying nothing, when ``seq`` is not newer than the fence; else True.

        Raises:
            ValueError: ``seq`` is negative.
            StateStoreError: the server is unreachable, timed out or refused the script.
        """
        if seq < 0:
            raise ValueError(f"stream sequence must be >= 0, got {seq}")
        keys = [self._fence_key(partition)]
        keys.extend(self._prefix + key for key in writes)
        args: list[bytes | str] = [str(seq)]
        args.extend(orjson.dumps(value) for value in writes.values())
        try:
            applied = self._commit(keys=keys, args=args)
        except RedisError as exc:
            raise self._error("commit", exc) from exc
        return bool(applied)

    def close(self) -> None:
        """Release the connection pool (idempotent)."""
        self._client.close()

    def _fence_key(self, partition: str) -> str:
        return f"{self._prefix}fence:{partition}"

    def _error(self, operation: str, exc: RedisError) -> StateStoreError:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            what = "is unreachable or timed out"
        else:
            what = "refused the command"
        return StateStoreError(
            f"rule state {operation} failed: Redis at {self._url} {what}: "
            f"{type(exc).__name__}: {exc}"
        )
