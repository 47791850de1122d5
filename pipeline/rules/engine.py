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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.rule import BusinessRule, Rule
from eventray.pipeline.ports import Clock, StateStore
from eventray.pipeline.rules.compiler import (
    CompiledBusinessRule,
    EvalContext,
    compile_business_rule,
)
from eventray.pipeline.rules.outcome import (
    BatchOutcome,
    Evaluation,
    RuleInput,
    failed_evaluation,
)

__all__ = ["RuleEngine", "RuleSet", "state_key"]

_SCOPE_CACHE_LIMIT = 65_536  # distinct (org, asset, template, tags) seen before starting over


def state_key(org_id: str, business_rule_id: str, variable: str) -> str:
    return f"state:{org_id}:{business_rule_id}:{variable}"


@dataclass(frozen=True, slots=True)
class _Scoped:
    compiled: CompiledBusinessRule
    path_key: str
    include_children: bool


class _Target:
    """One business rule as it applies to one organization's events: its state keys are
    built once here, not per event. Compared by identity (one per (org, rule) per RuleSet)."""

    __slots__ = ("br_id", "compiled", "keys", "run")

    def __init__(self, org_id: str, compiled: CompiledBusinessRule) -> None:
        self.compiled = compiled
        self.br_id = compiled.id
        self.run = compiled.traced if compiled.debug else compiled.run  # debug: always traced
        self.keys = {var: state_key(org_id, self.br_id, var) for var in compiled.defaults}

    def load(self, values: dict[str, Any]) -> dict[str, Any]:
        """The working state from a snapshot; empty state reads the variable's default."""
        state = {}
        for var, default in self.compiled.defaults.items():
            value = values.get(self.keys[var])
            state[var] = default if value is None else value
        return state


class RuleSet:
    """Every enabled business rule, compiled, and indexed by organization.

    Args:
        rules: Rule templates by id.
        business_rules: the deployed instances.
        org_paths: pathKey of every organization (for ``includeChildren``).
        org_timezones: each organization's timezone (its own or the nearest ancestor's), for
            business rules with ``timezone: dynamic``.

    Business rules that fail to compile are kept out and listed in :attr:`errors`; the
    catalog refuses them at load time, so this only matters for programmatic use.
    """

    def __init__(
        self,
        rules: dict[str, Rule],
        business_rules: Iterable[BusinessRule],
        org_paths: dict[str, str],
        org_timezones: Mapping[str, tzinfo] | None = None,
    ) -> None:
        self.errors: dict[str, str] = {}
        self.org_paths = org_paths
        self._scoped: list[_Scoped] = []
        self.by_id: dict[str, CompiledBusinessRule] = {}
        for br in business_rules:
            rule = rules.get(br.rule_id)
            if rule is None:
                self.errors[br.id] = f"unknown rule {br.rule_id!r}"
                continue
            try:
                compiled = compile_business_rule(rule, br, org_timezones=org_timezones)
            except RuleError as exc:
                self.errors[br.id] = str(exc)
                continue
            self.by_id[br.id] = compiled
            if br.enabled and rule.enabled and br.org_id in org_paths:
                self._scoped.append(_Scoped(compiled, org_paths[br.org_id], br.include_children))
        self._org_cache: dict[tuple[str, str], tuple[CompiledBusinessRule, ...]] = {}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._scope_cache: dict[tuple[str, str, str, str, tuple[str, ...]], tuple[_Target, ...]]
        self._scope_cache = {}
        self._interned: dict[tuple[_Target, ...], tuple[_Target, ...]] = {}

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
        return [t.compiled for t in self.targets(event)]

    def targets(self, event: RuleInput) -> tuple[_Target, ...]:
        """The business rules that apply to ``event``, cached per (org, asset, template, tags):
        events of one asset share the answer, and the same tuple object."""
        key = (event.org_id, event.path_key, event.asset_id, event.template_id, event.tags)
        try:
            found = self._scope_cache.get(key)
        except TypeError:  # tags given as a list: correct, just not cacheable
            return self._find_targets(event)
        if found is None:
            if len(self._scope_cache) >= _SCOPE_CACHE_LIMIT:
                self._scope_cache.clear()
            found = self._scope_cache[key] = self._find_targets(event)
        return found

    def _find_targets(self, event: RuleInput) -> tuple[_Target, ...]:
        found = []
        for br in self.for_org(event.org_id, event.path_key):
            if br.accepts_asset(event.asset_id, event.template_id, event.tags):
                target = self._targets.get((event.org_id, br.id))
                if target is None:
                    target = self._targets[(event.org_id, br.id)] = _Target(event.org_id, br)
                found.append(target)
        return self._interned.setdefault(tuple(found), tuple(found))


class RuleEngine:
    """Evaluates batches of events against a :class:`RuleSet` with state in a StateStore.

    ``reference=True`` evaluates with the closure trees only: the reference semantics, which
    tests hold the generated functions to.
    """

    def __init__(
        self, rules: RuleSet, store: StateStore, *, clock: Clock, reference: bool = False
    ) -> None:
        self.rules = rules
        self.store = store
        self.clock = clock
        self.reference = reference

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

        The clock is read once per batch, when the first event with a business rule is
        evaluated: a batch is one moment (test mode sets the clock per single-event batch).
        """
        if not isinstance(events, list | tuple):
            events = list(events)  # read twice below: planning, then evaluating
        targets_of = self.rules.targets
        plan: list[tuple[_Target, ...]] = []
        needed: dict[_Target, None] = {}
        previous: tuple[_Target, ...] = ()
        for event in events:
            targets = targets_of(event)
            if only is not None:
                targets = tuple(t for t in targets if t.br_id == only)
            plan.append(targets)
            if targets is not previous:  # events mostly share one interned tuple
                needed.update(dict.fromkeys(targets))
                previous = targets
        snapshot = self.store.load(
            sorted({key for t in needed for key in t.keys.values()}), partition=partition
        )
        working = {t: t.load(snapshot.values) for t in needed}
        outcome = BatchOutcome()
        evaluations, replayed, writes = outcome.evaluations, outcome.replayed, outcome.writes
        record = evaluations.append
        applied_seq = snapshot.applied_seq
        batch_seq = None
        now: datetime | None = None
        for event, targets in zip(events, plan, strict=True):
            seq = event.seq
            if seq is not None:
                if seq <= applied_seq:
                    replayed.append(event.event_tracker_id)
                    continue
                if batch_seq is None or seq > batch_seq:
                    batch_seq = seq
            if not targets:
                continue
            if now is None:
                now = self.clock.now()
            reference = self.reference or type(event.view) is not dict  # see codegen.Paths
            for target in targets:
                state = working[target]
                if reference:
                    evaluation = self._evaluate_one(event, target.compiled, state, trace, now)
                elif trace:
                    evaluation = target.compiled.traced(event, state, now)
                else:
                    evaluation = target.run(event, state, now)
                record(evaluation)
                changes = evaluation.state_changes
                if changes:
                    keys = target.keys
                    for var, change in changes.items():
                        writes[keys[var]] = change["to"]
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

    def reset(self, org_ids: Iterable[str], *, partition: str, seq: int) -> bool:
        """Put every state variable of the business rules that apply to ``org_ids`` back to
        its default, atomically with the partition's sequence fence (a replay's reset marker
        at stream sequence ``seq``, see :mod:`eventray.pipeline.replay`).

        Only the keys of business rules in the catalog now are reset (a deleted business
        rule's keys are never read again). Returns False, changing nothing, when the fence
        had already passed ``seq`` (the marker was delivered again).
        """
        writes: dict[str, Any] = {}
        for org_id in org_ids:
            path_key = self.rules.org_paths.get(org_id)
            if path_key is None:  # an organization deleted since: no rule reads its state
                continue
            for compiled in self.rules.for_org(org_id, path_key):
                for var, default in compiled.defaults.items():
                    writes[state_key(org_id, compiled.id, var)] = default
        return self.store.commit(writes, partition=partition, seq=seq)

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
            return failed_evaluation(event, br.id, br.rule.id, state, ctx.changes, exc)

        return Evaluation(
            event.event_tracker_id, event.org_id, event.path_key, br.id, br.rule.id, matched,
            ctx.fired, ctx.changes, ctx.captures, ctx.execs, tree[0] if tree else None,
        )  # fmt: skip
