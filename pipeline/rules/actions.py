"""A rule's actions as callables: what State, Log and Exec actions do when they run.

Both evaluators use these: the closure tree (traced) calls them as they are; the generated
function inlines the common state transition and calls :func:`state_transition` for the rest,
and calls the Log and Exec closures as they are, so an action means the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from eventray.pipeline.errors import RuleError, TemplateRenderError
from eventray.pipeline.models.rule import (
    Action,
    BusinessRule,
    ExecAction,
    LogAction,
    Rule,
    StateAction,
    Variable,
)
from eventray.pipeline.paths import MISSING
from eventray.pipeline.rules.context import EvalContext, value_fn
from eventray.pipeline.rules.outcome import CaptureRecord, ExecIntent
from eventray.pipeline.rules.values import as_datetime, as_number, iso
from eventray.pipeline.templating import compile_template, format_value

__all__ = ["ActionFn", "Actions", "Transition", "coerce", "state_transition"]

ActionFn = Callable[[EvalContext], None]
Transition = Callable[[Any, Any], Any]
"""(value before, action's value) -> value after, as stored in the variable."""

_ORDER = {"state": 0, "log": 1, "exec": 2}


def coerce(variable: Variable, value: Any) -> Any:
    """``value`` as the variable's type stores it; raises RuleError if it cannot be."""
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


def state_transition(variable: Variable, action: StateAction) -> Transition:
    op, action_id = action.op, action.id

    def transition(before: Any, value: Any) -> Any:
        if op == "set":
            return coerce(variable, value)
        delta, base = as_number(value), as_number(before)
        if delta is None or base is None:
            raise RuleError(
                f"action {action_id!r}: {op} needs numbers, got "
                f"{format_value(before)!r} and {format_value(value)!r}"
            )
        return coerce(variable, base + delta if op == "increment" else base - delta)

    return transition


class Actions:
    """Builds the actions of one business rule."""

    def __init__(self, rule: Rule, business_rule: BusinessRule) -> None:
        self.rule = rule
        self.br = business_rule
        self.variables = {v.name: v for v in rule.variables}
        self.by_id: dict[str, Action] = {a.id: a for a in rule.actions}
        self.capture_types = {c.name: c.type for c in rule.capture_fields}

    def ordered(self, action_ids: Sequence[str]) -> list[Action]:
        """The attached actions in running order: State -> Log -> Exec, stable within a type."""
        return sorted((self.by_id[i] for i in action_ids), key=lambda a: _ORDER[a.type])

    def build(self, action: Action) -> ActionFn:
        if isinstance(action, StateAction):
            return self.state_action(action)
        if isinstance(action, LogAction):
            return self.log_action(action)
        return self.exec_action(action)

    def attachment(self, action_ids: Sequence[str]) -> ActionFn | None:
        if not action_ids:
            return None
        steps = [self.build(action) for action in self.ordered(action_ids)]

        def run(ctx: EvalContext) -> None:
            for step in steps:
                step(ctx)

        return run

    def state_action(self, action: StateAction) -> ActionFn:
        transition = state_transition(self.variables[action.variable], action)
        amount = value_fn(action.value)
        name, action_id = action.variable, action.id

        def apply(ctx: EvalContext) -> None:
            before = ctx.state[name]
            after = transition(before, amount(ctx))
            ctx.state[name] = after
            change = ctx.changes.get(name)
            if change is None:
                ctx.changes[name] = {"from": before, "to": after}
            else:
                change["to"] = after
            ctx.fired.append(action_id)

        return apply

    def log_action(self, action: LogAction) -> ActionFn:
        getters = {name: value_fn(ref) for name, ref in action.captures.items()}
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
