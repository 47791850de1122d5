"""Compiles a business rule (its Rule + parameters) into closures, once.

The YAML tree is walked at compile time only. Per event, evaluation is a chain of closure calls
over an :class:`EvalContext`; a trace is built only when asked for (debug or test mode).

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
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from eventray.pipeline.errors import RuleError, TemplateRenderError
from eventray.pipeline.models.rule import (
    Action,
    BusinessRule,
    Condition,
    ExecAction,
    Group,
    GroupItem,
    LogAction,
    Rule,
    StateAction,
    ValueRef,
    Variable,
)
from eventray.pipeline.paths import MISSING, compile_path
from eventray.pipeline.rules.operators import OPERATOR_FUNCTIONS
from eventray.pipeline.rules.outcome import CaptureRecord, ExecIntent
from eventray.pipeline.rules.values import as_datetime, as_number, iso
from eventray.pipeline.templating import compile_template, format_value

__all__ = ["CompiledBusinessRule", "EvalContext", "compile_business_rule"]

ValueFn = Callable[["EvalContext"], Any]
Node = Callable[["EvalContext", list[dict[str, Any]] | None], bool]
ActionFn = Callable[["EvalContext"], None]


@dataclass(slots=True)
class EvalContext:
    """Per (event, business rule) evaluation state."""

    view: dict[str, Any]
    state: dict[str, Any]
    params: Mapping[str, Any]
    now: datetime
    tz: tzinfo
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    captures: list[CaptureRecord] = field(default_factory=list)
    execs: list[ExecIntent] = field(default_factory=list)

    def render_context(self) -> dict[str, Any]:
        metadata = self.view.get("metadata")
        return {
            "event": self.view,
            "state": dict(self.state),
            "params": dict(self.params),
            "metadata": metadata if isinstance(metadata, dict) else {},
        }


def _value(ref: ValueRef) -> ValueFn:
    if ref.type == "event":
        get = compile_path(ref.value)
        return lambda ctx: get(ctx.view)
    if ref.type == "state":
        name = ref.value
        return lambda ctx: ctx.state[name]
    if ref.type == "variable":
        name = ref.value
        return lambda ctx: ctx.params.get(name, MISSING)
    if ref.type == "now":
        return lambda ctx: ctx.now
    constant = ref.value
    return lambda ctx: constant


def _operand(value: ValueRef | list[ValueRef] | None) -> ValueFn:
    if value is None:
        return lambda ctx: None
    if isinstance(value, list):
        low, high = _value(value[0]), _value(value[1])
        return lambda ctx: [low(ctx), high(ctx)]
    return _value(value)


def _traceable(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list):
        return [_traceable(v) for v in value]
    return value


def _coerce(variable: Variable, value: Any) -> Any:
    if variable.type == "number":
        number = as_number(value)
        if number is None:
            raise RuleError(
                f"cannot store {format_value(value)!r} in number variable {variable.name!r}"
            )
        return int(number) if number.is_integer() else number
    if variable.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise RuleError(
            f"cannot store {format_value(value)!r} in boolean variable {variable.name!r}"
        )
    if isinstance(value, datetime):
        return iso(value)
    return format_value(value) if not isinstance(value, str) else value


class _Compiler:
    def __init__(self, rule: Rule, business_rule: BusinessRule) -> None:
        self.rule = rule
        self.br = business_rule
        self.variables = {v.name: v for v in rule.variables}
        self.actions: dict[str, Action] = {a.id: a for a in rule.actions}
        self.capture_types = {c.name: c.type for c in rule.capture_fields}

    # ---------------------------------------------------------------- actions
    def state_action(self, action: StateAction) -> ActionFn:
        variable = self.variables[action.variable]
        amount = _value(action.value)
        name, op, action_id = variable.name, action.op, action.id

        def apply(ctx: EvalContext) -> None:
            before = ctx.state[name]
            value = amount(ctx)
            if op == "set":
                after = _coerce(variable, value)
            else:
                delta, base = as_number(value), as_number(before)
                if delta is None or base is None:
                    raise RuleError(
                        f"action {action_id!r}: {op} needs numbers, got "
                        f"{format_value(before)!r} and {format_value(value)!r}"
                    )
                after = _coerce(variable, base + delta if op == "increment" else base - delta)
            ctx.state[name] = after
            change = ctx.changes.get(name)
            if change is None:
                ctx.changes[name] = {"from": before, "to": after}
            else:
                change["to"] = after
            ctx.fired.append(action_id)

        return apply

    def log_action(self, action: LogAction) -> ActionFn:
        getters = {name: _value(ref) for name, ref in action.captures.items()}
        types = self.capture_types
        br_id, action_id, log_name = self.br.id, action.id, action.name

        def capture(ctx: EvalContext) -> None:
            fields: dict[str, Any] = {}
            for name, get in getters.items():
                value = get(ctx)
                kind = types.get(name, "text")
                if value is MISSING or value is None:
                    fields[name] = None
                elif kind == "number":
                    fields[name] = as_number(value)
                elif kind == "boolean":
                    fields[name] = (
                        value if isinstance(value, bool) else str(value).lower() == "true"
                    )
                elif kind == "date":
                    moment = as_datetime(value, ctx.tz)
                    fields[name] = iso(moment) if moment else None
                else:
                    fields[name] = format_value(value)
            ctx.captures.append(CaptureRecord(br_id, action_id, log_name, fields))
            ctx.fired.append(action_id)

        return capture

    def exec_action(self, action: ExecAction) -> ActionFn:
        try:
            message = compile_template(action.message) if action.message is not None else None
        except TemplateRenderError as exc:
            raise RuleError(f"action {action.id!r}: {exc}") from exc
        br_id, action_id, trigger_id = self.br.id, action.id, action.trigger_id
        mode, on_error = self.rule.execution.mode, self.rule.execution.on_error

        def intend(ctx: EvalContext) -> None:
            context = ctx.render_context()
            text = message(context, None) if message is not None else None
            ctx.execs.append(
                ExecIntent(br_id, action_id, trigger_id, text, context, mode, on_error)
            )
            ctx.fired.append(action_id)

        return intend

    def attachment(self, action_ids: Sequence[str]) -> ActionFn | None:
        if not action_ids:
            return None
        chosen = [self.actions[i] for i in action_ids]
        order = {"state": 0, "log": 1, "exec": 2}
        steps: list[ActionFn] = []
        for action in sorted(chosen, key=lambda a: order[a.type]):  # stable: keeps the given order
            if isinstance(action, StateAction):
                steps.append(self.state_action(action))
            elif isinstance(action, LogAction):
                steps.append(self.log_action(action))
            else:
                steps.append(self.exec_action(action))

        def run(ctx: EvalContext) -> None:
            for step in steps:
                step(ctx)

        return run

    # ---------------------------------------------------------------- conditions and groups
    def condition(self, cond: Condition, path: str) -> Node:
        left, right = _value(cond.field), _operand(cond.value)
        op = OPERATOR_FUNCTIONS[cond.operator]
        operator = cond.operator
        attached = self.attachment(cond.actions)

        def evaluate(ctx: EvalContext, trace: list[dict[str, Any]] | None) -> bool:
            a, b = left(ctx), right(ctx)
            result = op(a, b, ctx)
            if trace is not None:
                trace.append({"type": "condition", "path": path, "operator": operator,
                              "left": _traceable(a), "right": _traceable(b), "result": result})  # fmt: skip
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
        attached = self.attachment(group.actions)

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
    root: Node
    defaults: dict[str, Any]
    params: dict[str, Any]
    tz: tzinfo | None  # None: dynamic, from the event's metadata.timezone
    template_ids: frozenset[str]
    tags: frozenset[str]
    asset_ids: frozenset[str]
    debug: bool = False

    @property
    def id(self) -> str:
        return self.business_rule.id

    def accepts_asset(self, asset_id: str, template_id: str, tags: Sequence[str]) -> bool:
        if self.asset_ids and asset_id not in self.asset_ids:
            return False
        if self.template_ids and template_id not in self.template_ids:
            return False
        return not self.tags or any(tag in self.tags for tag in tags)

    def timezone_for(self, view: Mapping[str, Any]) -> tzinfo:
        if self.tz is not None:
            return self.tz
        metadata = view.get("metadata")
        name = metadata.get("timezone") if isinstance(metadata, dict) else None
        if isinstance(name, str):
            try:
                return ZoneInfo(name)
            except (KeyError, ValueError):
                pass
        return ZoneInfo("UTC")


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


def compile_business_rule(rule: Rule, business_rule: BusinessRule) -> CompiledBusinessRule:
    """Compile once; raises :class:`RuleError` naming what is wrong."""
    if business_rule.rule_id != rule.id:
        raise RuleError(f"business rule {business_rule.id!r} is bound to {business_rule.rule_id!r}")
    params = resolve_parameters(rule, business_rule)
    compiler = _Compiler(rule, business_rule)
    root = compiler.group(rule.when, "when")
    tz = None if business_rule.timezone == "dynamic" else ZoneInfo(business_rule.timezone)
    assets = business_rule.assets
    return CompiledBusinessRule(
        business_rule=business_rule,
        rule=rule,
        root=root,
        defaults={v.name: v.default for v in rule.variables},
        params=params,
        tz=tz,
        template_ids=frozenset(assets.template_ids),
        tags=frozenset(assets.tags),
        asset_ids=frozenset(assets.asset_ids),
        debug=business_rule.debug,
    )
