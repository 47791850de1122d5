"""Batch evaluation of business rules against durable state.

Per batch: find each event's business rules (org scope, children by pathKey, asset filters),
load every state key the batch needs in **one** store call, evaluate the events in order on a
working copy, and commit every change in **one** atomic call that also records the batch's
stream sequence. A batch whose sequence the store has already applied (a redelivery after a
crash) changes nothing: its events are reported as ``replayed``.

State is scoped to the event's organization: ``state:{event orgId}:{businessRuleId}:{var}``.
Events are partitioned by orgId, so each key has exactly one writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.rule import BusinessRule, Rule
from eventray.pipeline.ports import Clock, StateStore
from eventray.pipeline.rules.compiler import (
    CompiledBusinessRule,
    EvalContext,
    compile_business_rule,
)
from eventray.pipeline.rules.outcome import BatchOutcome, Evaluation, RuleInput

__all__ = ["RuleEngine", "RuleSet", "state_key"]


def state_key(org_id: str, business_rule_id: str, variable: str) -> str:
    return f"state:{org_id}:{business_rule_id}:{variable}"


@dataclass(frozen=True, slots=True)
class _Scoped:
    compiled: CompiledBusinessRule
    path_key: str
    include_children: bool


class RuleSet:
    """Every enabled business rule, compiled, and indexed by organization.

    Args:
        rules: Rule templates by id.
        business_rules: the deployed instances.
        org_paths: pathKey of every organization (for ``includeChildren``).

    Business rules that fail to compile are kept out and listed in :attr:`errors`; the
    catalog refuses them at load time, so this only matters for programmatic use.
    """

    def __init__(
        self,
        rules: dict[str, Rule],
        business_rules: Iterable[BusinessRule],
        org_paths: dict[str, str],
    ) -> None:
        self.errors: dict[str, str] = {}
        self._scoped: list[_Scoped] = []
        self.by_id: dict[str, CompiledBusinessRule] = {}
        for br in business_rules:
            rule = rules.get(br.rule_id)
            if rule is None:
                self.errors[br.id] = f"unknown rule {br.rule_id!r}"
                continue
            try:
                compiled = compile_business_rule(rule, br)
            except RuleError as exc:
                self.errors[br.id] = str(exc)
                continue
            self.by_id[br.id] = compiled
            if br.enabled and rule.enabled and br.org_id in org_paths:
                self._scoped.append(_Scoped(compiled, org_paths[br.org_id], br.include_children))
        self._org_cache: dict[tuple[str, str], tuple[CompiledBusinessRule, ...]] = {}

    def for_org(self, org_id: str, path_key: str) -> tuple[CompiledBusinessRule, ...]:
        """Business rules whose org scope covers ``org_id`` (cached per org)."""
        key = (org_id, path_key)
        found = self._org_cache.get(key)
        if found is None:
            found = tuple(
                s.compiled
                for s in self._scoped
                if s.compiled.business_rule.org_id == org_id
                or (s.include_children and path_key.startswith(s.path_key + "/"))
            )
            self._org_cache[key] = found
        return found

    def applicable(self, event: RuleInput) -> list[CompiledBusinessRule]:
        return [
            br
            for br in self.for_org(event.org_id, event.path_key)
            if br.accepts_asset(event.asset_id, event.template_id, event.tags)
        ]


class RuleEngine:
    """Evaluates batches of events against a :class:`RuleSet` with state in a StateStore."""

    def __init__(self, rules: RuleSet, store: StateStore, *, clock: Clock) -> None:
        self.rules = rules
        self.store = store
        self.clock = clock

    def evaluate(
        self,
        events: Sequence[RuleInput],
        *,
        partition: str = "p0",
        trace: bool = False,
        only: str | None = None,
        commit: bool = True,
    ) -> BatchOutcome:
        """Evaluate ``events`` in order and commit their state changes atomically.

        Args:
            events: the batch, in stream order.
            partition: the stream partition (its sequence fence lives in the store).
            trace: build the evaluation tree for every evaluation (debug rules always do).
            only: evaluate just this business rule (test mode).
            commit: apply the state changes now. With False the caller commits later with
                :meth:`commit` (after the batch's outputs are durable elsewhere); until then
                ``outcome.committed`` is False.
        """
        plan: list[tuple[RuleInput, list[CompiledBusinessRule]]] = []
        keys: set[str] = set()
        for event in events:
            brs = self.rules.applicable(event)
            if only is not None:
                brs = [br for br in brs if br.id == only]
            plan.append((event, brs))
            for br in brs:
                for var in br.defaults:
                    keys.add(state_key(event.org_id, br.id, var))
        snapshot = self.store.load(sorted(keys), partition=partition)
        outcome = BatchOutcome()
        working: dict[tuple[str, str], dict[str, Any]] = {}
        batch_seq = None
        for event, brs in plan:
            if event.seq is not None:
                if event.seq <= snapshot.applied_seq:
                    outcome.replayed.append(event.event_tracker_id)
                    continue
                batch_seq = event.seq if batch_seq is None else max(batch_seq, event.seq)
            now = self.clock.now() if brs else None
            for br in brs:
                state = working.get((event.org_id, br.id))
                if state is None:
                    state = {}
                    for var, default in br.defaults.items():
                        value = snapshot.values.get(state_key(event.org_id, br.id, var))
                        state[var] = default if value is None else value
                    working[(event.org_id, br.id)] = state
                assert now is not None
                outcome.evaluations.append(self._evaluate_one(event, br, state, trace, now))
        writes: dict[str, Any] = {}
        for evaluation in outcome.evaluations:
            for var, change in evaluation.state_changes.items():
                writes[state_key(evaluation.org_id, evaluation.business_rule_id, var)] = change[
                    "to"
                ]
        outcome.writes = writes
        outcome.seq = batch_seq if batch_seq is not None else 0
        if not commit:
            outcome.committed = False
            return outcome
        self.commit(outcome, partition=partition)
        return outcome

    def commit(self, outcome: BatchOutcome, *, partition: str) -> bool:
        """Apply an evaluated batch's state changes with its sequence fence (atomically).

        Returns False if the store had already applied that sequence: then nothing of the
        batch stands (its events are marked replayed and its outputs cleared).
        """
        if not outcome.writes and not outcome.seq:
            outcome.committed = True
            return True
        outcome.committed = self.store.commit(outcome.writes, partition=partition, seq=outcome.seq)
        if not outcome.committed:  # applied concurrently or earlier: nothing of it stands
            outcome.replayed = [e.event_tracker_id for e in outcome.evaluations] + outcome.replayed
            outcome.evaluations = []
            outcome.writes = {}
        return outcome.committed

    def _evaluate_one(
        self,
        event: RuleInput,
        br: CompiledBusinessRule,
        state: dict[str, Any],
        trace: bool,
        now: datetime,
    ) -> Evaluation:
        ctx = EvalContext(event.view, state, br.params, now, br.timezone_for(event.view))
        tree: list[dict[str, Any]] | None = [] if (trace or br.debug) else None
        try:
            matched = br.root(ctx, tree)
        except Exception as exc:  # one bad evaluation must not stop the batch
            for var, change in ctx.changes.items():  # a failed evaluation applies nothing
                state[var] = change["from"]
            reason = str(exc) if isinstance(exc, RuleError) else f"{type(exc).__name__}: {exc}"
            return Evaluation(
                event.event_tracker_id,
                event.org_id,
                event.path_key,
                br.id,
                br.rule.id,
                False,
                error=reason,
            )

        return Evaluation(
            event.event_tracker_id, event.org_id, event.path_key, br.id, br.rule.id, matched,
            ctx.fired, ctx.changes, ctx.captures, ctx.execs, tree[0] if tree else None,
        )  # fmt: skip
