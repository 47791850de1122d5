"""The rule-partition actor: a :class:`RulePartition` in its own process, the single writer of
the rule state of the organizations hashed to it (``pipeline.rules_in_lane = false``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from eventray.actors.host import log_as_actor
from eventray.config.settings import Settings
from eventray.pipeline.catalog import Catalog, catalog_from_store
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.errors import RetryableError
from eventray.pipeline.ports import Adapters
from eventray.pipeline.rules.outcome import BatchOutcome, RuleInput
from eventray.pipeline.rules.partition import CommitStatus, RulePartition
from eventray.pipeline.rules.stage import RuleStage

__all__ = ["RuleActorsClient", "RulePartitionActor", "RulesUnavailable", "rule_actor_name"]


def rule_actor_name(partition: int) -> str:
    """The Ray name of a partition's rule actor."""
    return f"rules-p{partition}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RulePartitionActor:
    def __init__(self, settings: Settings, adapters: Adapters, partition: int) -> None:
        log_as_actor(settings, f"rules-{partition}")
        self._config = adapters.config_store()
        catalog, self.revision = catalog_from_store(self._config)
        self._partition = RulePartition(
            partition=f"p{partition}",
            store=adapters.state_store(),
            clock=SystemClock(),
            catalog=catalog,
        )

    def reload(self) -> int:
        """Rebuild the compiled rules from the config store (after ``eventray apply``)."""
        catalog, self.revision = catalog_from_store(self._config)
        self._partition.use(catalog)
        return self.revision

    def evaluate(self, events: list[RuleInput]) -> BatchOutcome:
        return self._partition.evaluate(events)

    def commit(self, seq: int) -> CommitStatus:
        return self._partition.commit(seq)

    def reset(self, org_ids: list[str], seq: int) -> bool:
        return self._partition.reset(org_ids, seq)

    def stats(self) -> dict[str, int]:
        return {"evaluated": self._partition.evaluated, "revision": self.revision}


class RulesUnavailable(RetryableError):
    """A rule actor is restarting: the batch waits and evaluates again."""


class RuleActorsClient(RuleStage):
    """The rules step over rule-partition actors, found by name.

    Args:
        names: the actor name of each partition's rule actor.
    """

    def __init__(self, names: dict[int, str]) -> None:
        self._names = dict(names)
        self._handles: dict[int, Any] = {}

    def own(self, partitions: list[int]) -> None:
        """The partitions this lane evaluates from now on (their actors are found by name)."""
        self._names = {p: rule_actor_name(p) for p in partitions}

    def _handle(self, partition: int) -> Any:
        handle = self._handles.get(partition)
        if handle is None:
            try:
                handle = ray.get_actor(self._names[partition])
            except ValueError as exc:
                raise RulesUnavailable(f"no rule actor for p{partition}: {exc}") from exc
            self._handles[partition] = handle
        return handle

    async def _call(self, partition: int, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._handle(partition), method).remote(*args)
        except (RayActorError, ActorUnavailableError) as exc:
            self._handles.pop(partition, None)
            raise RulesUnavailable(f"rule actor of p{partition} is unavailable: {exc}") from exc

    async def evaluate(self, partition: int, inputs: list[RuleInput]) -> BatchOutcome:
        outcome: BatchOutcome = await self._call(partition, "evaluate", inputs)
        return outcome

    async def commit(self, partition: int, seq: int) -> CommitStatus:
        status: CommitStatus = await self._call(partition, "commit", seq)
        return status

    async def reset(self, partition: int, org_ids: Sequence[str], seq: int) -> bool:
        done: bool = await self._call(partition, "reset", list(org_ids), seq)
        return done

    def use(self, catalog: Catalog) -> None:
        """Rule actors reload themselves on the config message (see :meth:`reload`)."""

    async def reload(self) -> None:
        """Tell every rule actor to reload now."""
        for partition in self._names:
            await self._call(partition, "reload")
