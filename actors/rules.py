"""The rule-partition actor: a :class:`pipeline.rules.partition.RulePartition` in its own
process, the single writer of the rule state of the organizations hashed to it."""

from __future__ import annotations

import ray

from eventray.cluster.wiring import Endpoints, catalog_from, make_config_store, make_state_store
from eventray.config.settings import Settings
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput
from eventray.pipeline.rules.partition import CommitStatus, RulePartition

__all__ = ["RulePartitionActor"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RulePartitionActor:
    def __init__(self, settings: Settings, endpoints: Endpoints, partition: int) -> None:
        self._config = make_config_store(endpoints)
        catalog, self.revision = catalog_from(self._config)
        self._partition = RulePartition(
            partition=f"p{partition}",
            store=make_state_store(endpoints),
            clock=SystemClock(),
            catalog=catalog,
        )

    def reload(self) -> int:
        """Rebuild the compiled rules from the config store (after ``eventray apply``)."""
        catalog, self.revision = catalog_from(self._config)
        self._partition.use(catalog)
        return self.revision

    def evaluate(self, events: list[RuleInput]) -> BatchOutcome:
        return self._partition.evaluate(events)

    def commit(self, seq: int) -> CommitStatus:
        return self._partition.commit(seq)

    def stats(self) -> dict[str, int]:
        return {"evaluated": self._partition.evaluated, "revision": self.revision}
