"""Rule actors (``pipeline.rule_actors > 0``): each the single writer of the rule state of the
partitions it owns, and the client a lane evaluates its partitions' rules through.

Their count is independent of the partitions and the lanes: actor ``i`` of ``n`` owns every
partition ``p`` with ``p % n == i``, so each organization (hashed to one partition) has exactly
one owner. Actors are named for their generation and layout (``rules-{gen}-{i}-of-{n}``):
:meth:`Stack.scale_stage` starts a new generation beside the old one, points the lanes at it
and then removes the old one. A lane that missed the change (Ray restarted it) finds the newest
generation by name when the old one is gone. A batch evaluated on the old generation and
committed on the new one is answered ``no-pending`` and evaluated again from the committed
state, the same path as a rule actor that Ray restarted.
"""

from __future__ import annotations

import re
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

__all__ = [
    "RuleActorsClient",
    "RuleLayout",
    "RulePartitionActor",
    "RulesUnavailable",
    "current_rule_layout",
    "owned_partitions",
    "rule_actor_name",
]

RuleLayout = tuple[int, int]
"""(generation, actor count) of the rule actors."""

_NAME = re.compile(r"^rules-(\d+)-(\d+)-of-(\d+)$")


def rule_actor_name(partition: int, layout: RuleLayout) -> str:
    """The Ray name of the rule actor that owns ``partition`` under ``layout``."""
    generation, count = layout
    return f"rules-{generation}-{partition % count}-of-{count}"


def owned_partitions(index: int, count: int, partitions: int) -> list[int]:
    """The partitions rule actor ``index`` of ``count`` owns."""
    return [p for p in range(partitions) if p % count == index]


def current_rule_layout() -> RuleLayout | None:
    """The newest generation of rule actors that Ray knows by name (None: there are none)."""
    layouts = set()
    for name in ray.util.list_named_actors():
        match = _NAME.match(name) if isinstance(name, str) else None
        if match:
            layouts.add((int(match[1]), int(match[3])))
    return max(layouts) if layouts else None


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RulePartitionActor:
    """The rule partitions ``partitions`` in one process (each org's state has one writer)."""

    def __init__(self, settings: Settings, adapters: Adapters, partitions: list[int]) -> None:
        log_as_actor(settings, "rules-" + "-".join(f"p{p}" for p in partitions))
        self._config = adapters.config_store()
        catalog, self.revision = catalog_from_store(self._config)
        store, clock = adapters.state_store(), SystemClock()
        self._partitions = {
            p: RulePartition(partition=f"p{p}", store=store, clock=clock, catalog=catalog)
            for p in partitions
        }

    def reload(self) -> int:
        """Rebuild the compiled rules from the config store (after ``eventray apply``)."""
        catalog, self.revision = catalog_from_store(self._config)
        for partition in self._partitions.values():
            partition.use(catalog)
        return self.revision

    def _owned(self, partition: int) -> RulePartition:
        owned = self._partitions.get(partition)
        if owned is None:  # a lane on a stale layout: it must not write this state
            raise RulesUnavailable(f"p{partition} is not owned by this rule actor")
        return owned

    def evaluate(self, partition: int, events: list[RuleInput]) -> BatchOutcome:
        return self._owned(partition).evaluate(events)

    def commit(self, partition: int, seq: int) -> CommitStatus:
        return self._owned(partition).commit(seq)

    def reset(self, partition: int, org_ids: list[str], seq: int) -> bool:
        return self._owned(partition).reset(org_ids, seq)

    def stats(self) -> dict[str, Any]:
        return {
            "partitions": sorted(self._partitions),
            "evaluated": sum(p.evaluated for p in self._partitions.values()),
            "revision": self.revision,
        }


class RulesUnavailable(RetryableError):
    """A rule actor is restarting: the batch waits and evaluates again."""


class RuleActorsClient(RuleStage):
    """The rules step over rule actors, found by name.

    Args:
        layout: the rule actors' (generation, count) when the lane was made.
    """

    def __init__(self, layout: RuleLayout) -> None:
        self.layout = layout
        self._handles: dict[str, Any] = {}
        self._partitions: list[int] = []

    def own(self, partitions: list[int]) -> None:
        """The partitions this lane evaluates from now on (their actors are found by name)."""
        self._partitions = sorted(partitions)

    def relayout(self, layout: RuleLayout) -> None:
        """Send every call from now on to the actors of ``layout`` (a rule pool rescaled)."""
        self.layout = layout

    def _handle(self, partition: int) -> tuple[str, Any]:
        name = rule_actor_name(partition, self.layout)
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name)
            except ValueError as exc:
                newest = current_rule_layout()
                if newest is not None and newest != self.layout:
                    self.layout = newest  # the layout moved on while this lane was away
                raise RulesUnavailable(f"no rule actor {name} for p{partition}: {exc}") from exc
            self._handles[name] = handle
        return name, handle

    async def _call(self, partition: int, method: str, *args: Any) -> Any:
        name, handle = self._handle(partition)
        try:
            return await getattr(handle, method).remote(partition, *args)
        except (RayActorError, ActorUnavailableError) as exc:
            self._handles.pop(name, None)
            raise RulesUnavailable(
                f"rule actor {name} of p{partition} is unavailable: {exc}"
            ) from exc

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
        """Tell the rule actors of this lane's partitions to reload now."""
        seen: set[str] = set()
        for partition in self._partitions:
            name, handle = self._handle(partition)
            if name not in seen:
                seen.add(name)
                try:
                    await handle.reload.remote()
                except (RayActorError, ActorUnavailableError) as exc:
                    self._handles.pop(name, None)
                    raise RulesUnavailable(f"rule actor {name} is unavailable: {exc}") from exc
