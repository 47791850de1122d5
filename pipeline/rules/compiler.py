"""Compiles a business rule (its Rule + parameters) once, into equivalent evaluators.

The YAML tree is walked at compile time only. ``root`` is a tree of closures over an
:class:`EvalContext`: the reference semantics (tests compare the others against it, and the
engine falls back to it for event views that are not dicts). ``run`` and ``traced`` are
generated functions (:mod:`rulegen`) making the same decisions several times faster, without
and with the trace tree (debug rules and test mode).

Semantics (CONTRACTS.md "Rules"):

* Every item of a group is evaluated, in order, with no short-circuit: condition-level actions
  are side effects, and the trace shows every condition.
* When a condition (or group) is true, its attached actions run at once, in the order
  State -> Log -> Exec. State changes are visible to the conditions after it; Log and Exec
  actions are rendered against the state as it is at that moment and emitted after the event.
* Empty state reads the variable's default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from eventray.pipeline.errors import RuleError
from eventray.pipeline.models.rule import (
    BusinessRule,
    Condition,
    Group,
    GroupItem,
    Rule,
    ValueRef,
    known_operand,
    walk_conditions,
)
from eventray.pipeline.rules.actions import Actions
from eventray.pipeline.rules.context import EvalContext, ValueFn, event_timezone, value_fn
from eventray.pipeline.rules.operands import UNKNOWN, right_problem
from eventray.pipeline.rules.operators import OPERATOR_FUNCTIONS
from eventray.pipeline.rules.rulegen import RuleFn, generate_rule
from eventray.pipeline.rules.values import as_datetime, as_number, traceable

__all__ = ["CompiledBusinessRule", "EvalContext", "compile_business_rule"]

Node = Callable[["EvalContext", list[dict[str, Any]] | None], bool]


def _operand(value: ValueRef | list[ValueRef] | None) -> ValueFn:
    if value is None:
        return lambda ctx: None
    if isinstance(value, list):
        low, high = value_fn(value[0]), value_fn(value[1])
        return lambda ctx: [low(ctx), high(ctx)]
    return value_fn(value)


class _Compiler:
    def __init__(self, rule: Rule, business_rule: BusinessRule) -> None:
        self.actions = Actions(rule, business_rule)

    # ---------------------------------------------------------------- conditions and groups
    def condition(self, cond: Condition, path: str) -> Node:
        left, right = value_fn(cond.field), _operand(cond.value)
        op = OPERATOR_FUNCTIONS[cond.operator]
        operator = cond.operator
        attached = self.actions.attachment(cond.actions)

        def evaluate(ctx: EvalContext, trace: list[dict[str, Any]] | None) -> bool:
            a, b = left(ctx), right(ctx)
            result = op(a, b, ctx)
            if trace is not None:
                trace.append({"type": "condition", "path": path, "operator": operator,
                              "left": traceable(a), "right": traceable(b), "result": result})  # fmt: skip
            if result and attached is not None:
                attached(ctx)
            return result

        return evaluate

    def group(self, group: Group, path: str) -> Node:
        children: list[Node] = []
        for index, item in enumerate(group.items):
            child_path = f"{path}.items[{index}]"
            if isinstance(item, GroupItem):
                children.append(self.group(item.data, child_path))
            else:
                children.append(self.condition(item.data, child_path))
        logic = group.logic
        attached = self.actions.attachment(group.actions)

        def evaluate(ctx: EvalContext, trace: list[dict[str, Any]] | None) -> bool:
            items: list[dict[str, Any]] | None = [] if trace is not None else None
            results = [child(ctx, items) for child in children]
            if logic == "AND":
                result = all(results)
            elif logic == "OR":
                result = any(results)
            elif logic == "NAND":
                result = not all(results)
            else:
                result = not any(results)
            if trace is not None:
                trace.append({"type": "group", "path": path, "logic": logic, "result": result,
                              "items": items})  # fmt: skip
            if result and attached is not None:
                attached(ctx)
            return result

        return evaluate


@dataclass(frozen=True, slots=True)
class CompiledBusinessRule:
    """A business rule ready to evaluate, with its scope."""

    business_rule: BusinessRule
    rule: Rule
    root: Node  # the closure tree: the reference semantics
    run: RuleFn  # the generated function: the same decisions, without a trace
    generate_traced: Callable[[], RuleFn]  # the same with the trace: see ``traced``
    defaults: dict[str, Any]
    params: dict[str, Any]
    tz: tzinfo | None  # None: dynamic, from the event's organization or metadata.timezone
    template_ids: frozenset[str]
    tags: frozenset[str]
    asset_ids: frozenset[str]
    debug: bool = False
    zone_of: Callable[..., tzinfo] = event_timezone  # the dynamic zone of an event's view
    _traced: list[RuleFn] = field(default_factory=list, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.business_rule.id

    @property
    def traced(self) -> RuleFn:
        """The generated function that also builds the reference's trace tree. Made on first
        use: it costs as much to generate as ``run`` does, and most business rules are never
        traced (a debug rule's is made at compile time). Two threads racing here both get
        a correct function."""
        if not self._traced:
            self._traced.append(self.generate_traced())
        return self._traced[0]

    def accepts_asset(self, asset_id: str, template_id: str, tags: Sequence[str]) -> bool:
        if self.asset_ids and asset_id not in self.asset_ids:
            return False
        if self.template_ids and template_id not in self.template_ids:
            return False
        return not self.tags or any(tag in self.tags for tag in tags)

    def timezone_for(self, view: Mapping[str, Any]) -> tzinfo:
        return self.tz if self.tz is not None else self.zone_of(view)


def resolve_parameters(rule: Rule, business_rule: BusinessRule) -> dict[str, Any]:
    """The business rule's parameters with the rule's defaults, type-checked."""
    declared = {p.name: p for p in rule.parameters}
    unknown = sorted(set(business_rule.parameters) - set(declared))
    if unknown:
        raise RuleError(f"parameters {unknown} are not declared by rule {rule.id!r}")
    params: dict[str, Any] = {}
    for name, spec in declared.items():
        value = business_rule.parameters.get(name, spec.default)
        if value is None:
            if spec.is_required:
                raise RuleError(f"parameter {name!r} is required by rule {rule.id!r}")
            continue
        if spec.type == "number" and as_number(value) is None:
            raise RuleError(f"parameter {name!r} must be a number, got {value!r}")
        if spec.type == "boolean" and not isinstance(value, bool):
            raise RuleError(f"parameter {name!r} must be a boolean, got {value!r}")
        if spec.type == "date" and as_datetime(value) is None:
            raise RuleError(f"parameter {name!r} must be a date, got {value!r}")
        params[name] = value
    return params


def check_parameter_operands(rule: Rule, params: Mapping[str, Any]) -> None:
    """Refuse a parameter value a condition's operator can never use (a ``between`` bound
    given one number, a pattern RE2 does not take...): the rule's literals were checked when
    it was loaded, its parameters can only be checked with the business rule's values."""
    values = dict(params)
    for path, cond in walk_conditions(rule.when):
        listed = isinstance(cond.value, list)
        refs = cond.value if isinstance(cond.value, list) else [cond.value]
        for index, ref in enumerate(refs):
            if ref is None or ref.type != "variable":
                continue
            known = known_operand(ref, values)
            if listed:  # this bound alone (the others were checked, or are checked in turn)
                operand: Any = [known if i == index else UNKNOWN for i in range(len(refs))]
            else:
                operand = known
            problem = right_problem(cond.operator, operand, listed=listed)
            if problem is not None:
                raise RuleError(
                    f"parameter {ref.value!r} of rule {rule.id!r}, used by {path} (operator "
                    f"{cond.operator}): {problem}",
                    path=f"parameters.{ref.value}",
                )


def compile_business_rule(
    rule: Rule,
    business_rule: BusinessRule,
    *,
    org_timezones: Mapping[str, tzinfo] | None = None,
) -> CompiledBusinessRule:
    """Compile once; raises :class:`RuleError` naming what is wrong.

    ``org_timezones``: each organization's timezone (its own or the nearest ancestor's), which
    ``timezone: dynamic`` reads before the event's ``metadata.timezone``."""
    if business_rule.rule_id != rule.id:
        raise RuleError(f"business rule {business_rule.id!r} is bound to {business_rule.rule_id!r}")
    params = resolve_parameters(rule, business_rule)
    check_parameter_operands(rule, params)
    compiler = _Compiler(rule, business_rule)
    root = compiler.group(rule.when, "when")
    tz = None if business_rule.timezone == "dynamic" else ZoneInfo(business_rule.timezone)
    zone_of = (
        partial(event_timezone, zones=dict(org_timezones)) if org_timezones else event_timezone
    )
    assets = business_rule.assets
    actions = compiler.actions

    def generate_traced() -> RuleFn:
        return generate_rule(rule, business_rule.id, params, actions, tz, trace=True,
                             zone_of=zone_of)  # fmt: skip

    return CompiledBusinessRule(
        business_rule=business_rule,
        rule=rule,
        root=root,
        run=generate_rule(rule, business_rule.id, params, actions, tz, zone_of=zone_of),
        generate_traced=generate_traced,
        defaults={v.name: v.default for v in rule.variables},
        params=params,
        tz=tz,
        template_ids=frozenset(assets.template_ids),
        tags=frozenset(assets.tags),
        asset_ids=frozenset(assets.asset_ids),
        debug=business_rule.debug,
        zone_of=zone_of,
        _traced=[generate_traced()] if business_rule.debug else [],
    )
