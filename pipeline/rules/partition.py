"""A rule partition: two-phase evaluation for one stream partition (the single state writer).

``evaluate`` computes a batch's outcome against the committed state and keeps its writes
pending; once the batch's outputs are durable elsewhere (rows stored, deliveries queued) the
owner calls ``commit``, which applies the writes with the batch's stream sequence as the fence.
A crash in between loses only uncommitted writes, and the redelivered batch evaluates again
from the same state: effectively-once state. Used by the rule-partition actor, or directly by
a lane that owns its partitions' rules (``pipeline.rules_in_lane``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.ports import Clock, StateStore
from eventray.pipeline.rules.engine import RuleEngine
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput

__all__ = ["CommitStatus", "RulePartition"]

CommitStatus = Literal["applied", "already-applied", "no-pending"]


class RulePartition:
    def __init__(
        self, *, partition: str, store: StateStore, clock: Clock, catalog: Catalog
    ) -> None:
        self.partition = partition
        self.store = store
        self.clock = clock
        self._pending: BatchOutcome | None = None
        self.evaluated = 0
        self.use(catalog)

    def use(self, catalog: Catalog) -> None:
        """Switch to a new catalog's compiled rules (after ``eventray apply``)."""
        self._engine = RuleEngine(catalog.rule_set(), self.store, clock=self.clock)

    def evaluate(self, events: list[RuleInput]) -> BatchOutcome:
        outcome = self._engine.evaluate(events, partition=self.partition, commit=False)
        self._pending = outcome
        self.evaluated += len(events)
        return outcome

    def reset(self, org_ids: Sequence[str], seq: int) -> bool:
        """Reset the rule state of ``org_ids`` at stream sequence ``seq`` (a replay's reset
        marker); False when the fence had already passed it."""
        self._pending = None
        return self._engine.reset(org_ids, partition=self.partition, seq=seq)

    def commit(self, seq: int) -> CommitStatus:
        """Apply the pending batch ending at ``seq``.

        ``already-applied``: the store had that sequence (a replay); ``no-pending``: nothing
        was evaluated for it here (the owner restarted): evaluate again before acknowledging.
        """
        pending = self._pending
        if pending is None or pending.seq != seq:
            return "no-pending"
        self._pending = None
        return (
            "applied"
            if self._engine.commit(pending, partition=self.partition)
            else "already-applied"
        )
