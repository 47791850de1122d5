"""The rules step of a batch's tail, wherever the rule partitions live.

A lane evaluates its partitions' rules either in its own process (:class:`LocalRules`, the
default: the lane is already the single consumer of its partitions, so it is also the single
writer of their state) or in one rule-partition actor per partition (the actor host implements
the same protocol). Either way evaluation is two-phase: ``evaluate`` keeps the state changes
pending, ``commit`` applies them with the batch's stream sequence as the fence once the batch's
outputs are durable elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ports import Clock, StateStore
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput
from eventray.pipeline.rules.partition import CommitStatus, RulePartition

__all__ = ["LocalRules", "RuleStage", "RunSync", "inline"]

T = TypeVar("T")
RunSync = Callable[..., Awaitable[Any]]
"""Runs a blocking function (``run(fn, *args)``) off the event loop: a lane hands its worker
thread's ``run_in_executor``; single-process tools run it inline."""


async def inline(fn: Callable[..., T], *args: Any) -> T:
    """A :data:`RunSync` that runs ``fn`` right here (tools and tests without a loop to keep
    free)."""
    return fn(*args)


@runtime_checkable
class RuleStage(Protocol):
    """Evaluate and commit one partition's business rules, batch by batch."""

    async def evaluate(self, partition: int, inputs: list[RuleInput]) -> BatchOutcome:
        """The batch's outcome against the committed state; its writes stay pending."""
        ...

    async def commit(self, partition: int, seq: int) -> CommitStatus:
        """Apply the pending batch ending at ``seq`` (see :class:`RulePartition`)."""
        ...

    async def reset(self, partition: int, org_ids: Sequence[str], seq: int) -> bool:
        """Reset the rule state of ``org_ids`` at stream sequence ``seq`` (a replay's reset
        marker, see :meth:`RulePartition.reset`); False when the fence had passed it."""
        ...

    def use(self, catalog: Catalog) -> None:
        """Switch to a new catalog's rules (a no-op where the rules reload themselves)."""
        ...


class LocalRules(RuleStage):
    """Rule partitions evaluated in this process, state in ``store``.

    Args:
        partitions: the partitions this process owns.
        store: rule state (Redis/Valkey, or the in-memory twin).
        clock: time for ``now`` and cooldowns.
        catalog: the entities to compile the rules of.
        run_sync: where the blocking state-store calls run.
    """

    def __init__(
        self,
        *,
        partitions: Iterable[int],
        store: StateStore,
        clock: Clock,
        catalog: Catalog,
        run_sync: RunSync = inline,
    ) -> None:
        self._run = run_sync
        self._store, self._clock, self._catalog = store, clock, catalog
        self._partitions = {
            p: RulePartition(partition=f"p{p}", store=store, clock=clock, catalog=catalog)
            for p in partitions
        }

    def own(self, partitions: Iterable[int]) -> None:
        """Evaluate exactly these partitions from now on (a partition moved between lanes:
        its state and fence are in the store, so the new owner starts from them)."""
        wanted = set(partitions)
        for p in set(self._partitions) - wanted:
            del self._partitions[p]
        for p in wanted - set(self._partitions):
            self._partitions[p] = RulePartition(partition=f"p{p}", store=self._store,
                                                clock=self._clock, catalog=self._catalog)  # fmt: skip

    async def evaluate(self, partition: int, inputs: list[RuleInput]) -> BatchOutcome:
        outcome: BatchOutcome = await self._run(self._partitions[partition].evaluate, inputs)
        return outcome

    async def commit(self, partition: int, seq: int) -> CommitStatus:
        status: CommitStatus = await self._run(self._partitions[partition].commit, seq)
        return status

    async def reset(self, partition: int, org_ids: Sequence[str], seq: int) -> bool:
        done: bool = await self._run(self._partitions[partition].reset, org_ids, seq)
        return done

    def use(self, catalog: Catalog) -> None:
        self._catalog = catalog
        for partition in self._partitions.values():
            partition.use(catalog)

    @property
    def evaluated(self) -> int:
        """Rule inputs evaluated so far, over every partition."""
        return sum(p.evaluated for p in self._partitions.values())
