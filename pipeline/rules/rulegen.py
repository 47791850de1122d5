"""A business rule as one generated function, without or with its evaluation trace.

``run(event, state, now) -> Evaluation`` makes the same decisions, in the same order, with the
same side effects as the closure tree in :mod:`compiler` (which stays the reference), and
reports them the same way (a failure undoes its state changes); generated with ``trace``, it
also builds the same trace tree, node for node:

* every item of a group is computed into a local before the group combines them (no
  short-circuit), and a true condition's or group's actions run right there, State -> Log ->
  Exec, so a state change is visible to the conditions after it;
* a state variable is read where the condition reads it; event paths, parameters and literals
  cannot change during an evaluation, so they are read once (paths) or bound at compile time;
* each operator is inline only for operand types where that is provably the operator's
  result (behind an exact ``type(x)`` guard); any other value calls the operator function;
* the common number transition of a state action is inline; every other case calls
  :func:`actions.state_transition`, and Log/Exec actions call their closures;
* a trace node is built right after its condition's or group's result (before its actions
  run, as the reference appends it), as a copy of a compile-time template plus the values
  known per event; operands are shown through :func:`values.traceable`, inline for the types
  it returns unchanged.

The caller guarantees ``event.view`` is a ``dict`` (see :class:`codegen.Paths`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any, NamedTuple

from eventray.pipeline.models.rule import Condition, Group, GroupItem, Rule, StateAction, ValueRef
from eventray.pipeline.paths import MISSING
from eventray.pipeline.rules.actions import Actions, coerce, state_transition
from eventray.pipeline.rules.codegen import NUMBERS, Paths, Source
from eventray.pipeline.rules.context import EvalContext, event_timezone
from eventray.pipeline.rules.operators import OPERATOR_FUNCTIONS, pattern
from eventray.pipeline.rules.outcome import Evaluation, RuleInput, failed_evaluation
from eventray.pipeline.rules.values import as_number, traceable

__all__ = ["ENV_OPERATORS", "RuleFn", "generate_rule"]

RuleFn = Callable[[RuleInput, dict[str, Any], datetime], Evaluation]
ENV_OPERATORS = frozenset(
    {"beforeDate", "afterDate", "betweenDate", "beforeTime", "afterTime", "betweenTime",
     "olderThanSeconds", "newerThanSeconds"}
)  # fmt: skip
"""The operators that read the environment (``now``, the timezone); the rest ignore it."""

_PARAMS = ("event", "state", "now")
_ORDER = {"greaterThan": ">", "greaterThanEquals": ">=", "lessThan": "<", "lessThanEquals": "<="}
_DYNAMIC: Any = object()  # an operand whose value is known only per event
# The types traceable() returns as they are (exact types: a subclass goes through the call).
_SHOWN_AS_IS = frozenset({str, int, float, bool, type(None), dict})


class _Operand(NamedTuple):
    name: str  # a local or a bound constant holding the value
    value: Any  # the value when known at compile time, else _DYNAMIC
    hoisted: bool = False  # read once at the top (an event path): its type tests can be too


def _known(value: str) -> _Operand:
    """A trace field fixed at compile time (a node's type, path, operator or logic)."""
    return _Operand("", value)


def _numbers(*values: Any) -> list[float] | None:
    """``as_number`` of each, or None if any is not a number (or cannot be converted)."""
    try:
        numbers = [as_number(v) for v in values]
    except (OverflowError, ValueError):
        return None
    return None if any(n is None for n in numbers) else [n for n in numbers if n is not None]


def _equality_guard(value: Any) -> tuple[str, str] | None:
    """(type guard, comparison) under which ``loose_equal(x, value)`` is a plain comparison:
    two values of one type compare directly, and int and float compare with each other."""
    if type(value) is str:
        return "is str", "=="
    if type(value) in NUMBERS:
        return "in NUM", "=="
    if type(value) is bool:
        return "is bool", "is"
    return None


class _Writer:
    def __init__(
        self,
        rule: Rule,
        business_rule_id: str,
        params: Mapping[str, Any],
        actions: Actions,
        *,
        trace: bool,
    ) -> None:
        self.source = Source(_PARAMS, indent=1)
        self.source.declare(
            "view", "changes", "fired", "captures", "execs", "ctx", "exc",
            "before", "after", "change", "total",
        )  # fmt: skip
        self.paths = Paths(self.source, "view")
        self.params = params
        self.actions = actions
        self.rule = rule
        self.ids = f"{self.source.const(business_rule_id)}, {self.source.const(rule.id)}"
        self.trace = trace
        self.now_shown: str | None = None  # the local holding traceable(now), once needed

    def write(self, tz: tzinfo | None, zone_of: Callable[..., tzinfo] = event_timezone) -> RuleFn:
        s = self.source
        s.head += ["view = event.view", "changes = {}", "fired = []", "captures = []",
                   "execs = []", "try:"]  # fmt: skip
        if self._needs_context(self.rule.when):
            zone = s.const(tz) if tz is not None else f"{s.const(zone_of)}(view)"
            s.emit(0, f"ctx = {s.const(EvalContext)}(view, state, {s.const(self.params)}, now, "
                      f"{zone}, changes, fired, captures, execs)")  # fmt: skip
        matched, tree = self.group(self.rule.when, "when", 0)
        s.prelude = self.paths.render()
        if self.now_shown is not None:
            s.prelude.append(f"{self.now_shown} = {s.const(traceable)}(now)")
        s.tail += [
            "except Exception as exc:  # one bad evaluation must not stop the batch",
            f"    return {s.const(failed_evaluation)}(event, {self.ids}, state, changes, exc)",
            f"return {s.const(Evaluation)}(event.event_tracker_id, event.org_id, event.path_key, "
            f"{self.ids}, {matched}, fired, changes, captures, execs, {tree or 'None'})",
        ]
        function: RuleFn = s.build("<business rule, traced>" if self.trace else "<business rule>")
        return function

    def _needs_context(self, group: Group) -> bool:
        """Whether an env operator or a Log/Exec action (which take the context) is used."""
        if any(self.actions.by_id[i].type != "state" for i in group.actions):
            return True
        for item in group.items:
            if isinstance(item, GroupItem):
                if self._needs_context(item.data):
                    return True
            elif item.data.operator in ENV_OPERATORS or any(
                self.actions.by_id[i].type != "state" for i in item.data.actions
            ):
                return True
        return False

    # ---------------------------------------------------------------- conditions and groups
    def group(self, group: Group, path: str, depth: int) -> tuple[str, str]:
        """Emit the group; returns the locals of its result and of its trace node ("" if none)."""
        items = [
            self.group(item.data, f"{path}.items[{index}]", depth)
            if isinstance(item, GroupItem)
            else self.condition(item.data, f"{path}.items[{index}]", depth)
            for index, item in enumerate(group.items)
        ]
        results = [result for result, _ in items]
        every, some = " and ".join(results), " or ".join(results)
        combined = {"AND": every, "OR": some, "NAND": f"not ({every})", "NOR": f"not ({some})"}
        result = self.source.local("r")
        self.source.emit(depth, f"{result} = {combined[group.logic]}")
        node = "" if not self.trace else self.node(depth, {
            "type": _known("group"), "path": _known(path), "logic": _known(group.logic),
            "result": result, "items": f"[{', '.join(node for _, node in items)}]",
        })  # fmt: skip
        self.attach(group.actions, result, depth)
        return result, node

    def condition(self, cond: Condition, path: str, depth: int) -> tuple[str, str]:
        left = self.operand(cond.field, depth)
        if cond.value is None:
            right = _Operand("None", None)
        elif isinstance(cond.value, list):
            right = self.pair(cond.value[0], cond.value[1], depth)
        else:
            right = self.operand(cond.value, depth)
        result = self.source.local("r")
        self.source.emit(depth, f"{result} = {self.test(cond.operator, left, right)}")
        node = "" if not self.trace else self.node(depth, {
            "type": _known("condition"), "path": _known(path), "operator": _known(cond.operator),
            "left": left, "right": right, "result": result,
        })  # fmt: skip
        self.attach(cond.actions, result, depth)
        return result, node

    # ---------------------------------------------------------------- the trace
    def node(self, depth: int, fields: dict[str, _Operand | str]) -> str:
        """Emit a trace node: its fields (operands, or source text) in the reference's order.

        A copy of a template holding what is known at compile time, then a store per value
        known only per event: about half the cost of a dict display, and the key order is the
        template's. A known list is not in the template: each trace gets a list of its own.
        """
        s = self.source
        template: dict[str, Any] = {}
        stores = []
        for key, field in fields.items():
            if isinstance(field, str):
                template[key] = None
                stores.append((key, field))
            elif field.value is _DYNAMIC or isinstance(field.value, list):
                template[key] = None
                stores.append((key, self.shown(field)))
            else:
                template[key] = traceable(field.value)
        name = s.local("d")
        s.emit(depth, f"{name} = {s.const(dict.copy)}({s.const(template)})")
        for key, expression in stores:
            s.emit(depth, f"{name}[{s.const(key)}] = {expression}")
        return name

    def shown(self, operand: _Operand) -> str:
        """An expression equal to ``traceable(value)``: what the trace shows of an operand."""
        s = self.source
        if operand.value is not _DYNAMIC:
            if isinstance(operand.value, list):  # a fresh list per trace, as the reference's
                return f"{s.const(traceable)}({operand.name})"
            return s.const(traceable(operand.value))
        if operand.name == "now":
            if self.now_shown is None:
                self.now_shown = s.local("n")
            return self.now_shown
        x = operand.name
        return f"({x} if type({x}) in {s.const(_SHOWN_AS_IS)} else {s.const(traceable)}({x}))"

    def operand(self, ref: ValueRef, depth: int) -> _Operand:
        s = self.source
        if ref.type == "event":
            return _Operand(self.paths.value(ref.value), _DYNAMIC, hoisted=True)
        if ref.type == "state":  # read here: an earlier action may have changed it
            name = s.local("a")
            s.emit(depth, f"{name} = state[{s.const(ref.value)}]")
            return _Operand(name, _DYNAMIC)
        if ref.type == "now":
            return _Operand("now", _DYNAMIC)
        value = self.params.get(ref.value, MISSING) if ref.type == "variable" else ref.value
        return _Operand(s.const(value), value)

    def pair(self, low_ref: ValueRef, high_ref: ValueRef, depth: int) -> _Operand:
        low, high = self.operand(low_ref, depth), self.operand(high_ref, depth)
        if low.value is not _DYNAMIC and high.value is not _DYNAMIC:
            value = [low.value, high.value]  # operators never mutate their operands
            return _Operand(self.source.const(value), value)
        name = self.source.local("b")
        self.source.emit(depth, f"{name} = [{low.name}, {high.name}]")
        return _Operand(name, _DYNAMIC)

    def test(self, operator: str, left: _Operand, right: _Operand) -> str:
        """An expression equal to ``OPERATOR_FUNCTIONS[operator](left, right, env)``."""
        s, x, y, known = self.source, left.name, right.name, right.value
        env = "ctx" if operator in ENV_OPERATORS else "None"
        fallback = f"{s.const(OPERATOR_FUNCTIONS[operator])}({x}, {y}, {env})"
        if operator == "exists":
            return f"({x} is not M and {x} is not None)"
        if operator == "notExists":
            return f"({x} is M or {x} is None)"
        if known is _DYNAMIC:
            if operator in ("equals", "notEquals"):
                negate = "not " if operator == "notEquals" else ""
                same = f"({self._is(left, 'is str')} and {self._is(right, 'is str')})"
                numbers = f"({self._is(left, 'in NUM')} and {self._is(right, 'in NUM')})"
                return f"({negate}{x} == {y} if {same} or {numbers} else {fallback})"
            if operator in _ORDER:
                guard = f"{self._is(left, 'in NUM')} and {self._is(right, 'in NUM')}"
                return f"(float({x}) {_ORDER[operator]} float({y}) if {guard} else {fallback})"
            return fallback
        return self._test_constant(operator, left, known, fallback)

    def _is(self, operand: _Operand, test: str) -> str:
        """``type(x) <test>``: computed once at the top for a value read once at the top."""
        if operand.hoisted:
            return self.paths.guard(operand.name, test)
        return f"type({operand.name}) {test}"

    def _test_constant(self, operator: str, left: _Operand, known: Any, fallback: str) -> str:
        s, x = self.source, left.name
        if operator in ("equals", "notEquals"):
            guard = _equality_guard(known)
            if guard is None:
                return fallback
            negate = "not " if operator == "notEquals" else ""
            test = self._is(left, guard[0])
            return f"({negate}{x} {guard[1]} {s.const(known)} if {test} else {fallback})"
        if operator in _ORDER:
            numbers = _numbers(known)
            if numbers is None:
                return fallback
            want, test = s.const(numbers[0]), self._is(left, "in NUM")
            return f"(float({x}) {_ORDER[operator]} {want} if {test} else {fallback})"
        if operator == "between":
            bounds = (
                _numbers(*known) if isinstance(known, (list, tuple)) and len(known) == 2 else None
            )
            if bounds is None:
                return fallback
            low, high, test = s.const(bounds[0]), s.const(bounds[1]), self._is(left, "in NUM")
            return f"({low} <= float({x}) <= {high} if {test} else {fallback})"
        if operator in ("in", "notIn") and isinstance(known, (list, tuple)):
            if not all(type(option) is str for option in known):
                return fallback
            member = "in" if operator == "in" else "not in"
            options = s.const(frozenset(known))
            return f"({x} {member} {options} if {self._is(left, 'is str')} else {fallback})"
        if type(known) is not str:
            return fallback
        text, is_text = s.const(known), self._is(left, "is str")
        if operator in ("startsWith", "endsWith"):
            method = "startswith" if operator == "startsWith" else "endswith"
            return f"({x}.{method}({text}) if {is_text} else {fallback})"
        if operator in ("contains", "notContains"):
            member = "in" if operator == "contains" else "not in"
            return f"({text} {member} {x} if {is_text} else {fallback})"
        if operator == "regex":
            try:
                search = s.const(pattern(known).search)
            except Exception:  # an invalid pattern fails each evaluation, as the operator does
                return fallback
            return f"({search}({x}) if {is_text} else {fallback})"
        return fallback

    # ---------------------------------------------------------------- actions
    def attach(self, action_ids: list[str], result: str, depth: int) -> None:
        if not action_ids:
            return
        self.source.emit(depth, f"if {result}:")
        for action in self.actions.ordered(action_ids):
            if isinstance(action, StateAction):
                self.state_action(action, depth + 1)
            else:
                self.source.emit(depth + 1, f"{self.source.const(self.actions.build(action))}(ctx)")

    def state_action(self, action: StateAction, depth: int) -> None:
        s = self.source
        name = s.const(action.variable)
        s.emit(depth, f"before = state[{name}]")
        value = self.operand(action.value, depth)
        self._after(action, value, depth)
        s.emit(depth, f"state[{name}] = after")
        s.emit(depth, f"change = changes.get({name})")
        s.emit(depth, "if change is None:")
        s.emit(
            depth + 1, f"changes[{name}] = {{{s.const('from')}: before, {s.const('to')}: after}}"
        )
        s.emit(depth, "else:")
        s.emit(depth + 1, f"change[{s.const('to')}] = after")
        s.emit(depth, f"fired.append({s.const(action.id)})")

    def _after(self, action: StateAction, value: _Operand, depth: int) -> None:
        """Emit ``after = ...``: the transition inline where it is plain arithmetic."""
        s = self.source
        variable = self.actions.variables[action.variable]
        general = f"{s.const(state_transition(variable, action))}(before, {value.name})"
        if action.op == "set":
            if value.value is not _DYNAMIC:
                try:
                    s.emit(depth, f"after = {s.const(coerce(variable, value.value))}")
                    return
                except Exception:  # refused at run time, each time, as the reference does
                    pass
            s.emit(depth, f"after = {general}")
            return
        if variable.type != "number":
            s.emit(depth, f"after = {general}")
            return
        sign = "+" if action.op == "increment" else "-"
        if value.value is _DYNAMIC:
            guard = f"type(before) in NUM and {self._is(value, 'in NUM')}"
            delta = f"float({value.name})"
        else:
            numbers = _numbers(value.value)
            if numbers is None:
                s.emit(depth, f"after = {general}")
                return
            guard, delta = "type(before) in NUM", s.const(numbers[0])
        s.emit(depth, f"if {guard}:")
        s.emit(depth + 1, f"total = float(before) {sign} {delta}")
        s.emit(depth + 1, "after = int(total) if total.is_integer() else total")
        s.emit(depth, "else:")
        s.emit(depth + 1, f"after = {general}")


def generate_rule(
    rule: Rule,
    business_rule_id: str,
    params: Mapping[str, Any],
    actions: Actions,
    tz: tzinfo | None,
    *,
    trace: bool = False,
    zone_of: Callable[..., tzinfo] = event_timezone,
) -> RuleFn:
    """The business rule's evaluation as one function (``tz`` None: ``zone_of(view)`` for each
    event); with ``trace``, its Evaluation carries the evaluation tree."""
    return _Writer(rule, business_rule_id, params, actions, trace=trace).write(tz, zone_of)
