"""Rules (reusable templates) and Business Rules (deployed, parameterised instances).

The shapes are fixed by CONTRACTS.md "Rules". Cross-field checks that need only the rule itself
(an action id used by a group exists, a state action names a declared variable, a ``variable``
value names a declared parameter) happen here; checks against other entities (the trigger of an
exec action, the rule of a business rule) happen in :mod:`pipeline.catalog`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from eventray.pipeline.models.base import Entity, Model
from eventray.pipeline.rules.operands import NOW, UNKNOWN, right_problem

__all__ = [
    "OPERATORS",
    "Action",
    "AssetFilter",
    "BusinessRule",
    "CaptureField",
    "Condition",
    "ConditionItem",
    "ExecAction",
    "Execution",
    "Group",
    "GroupItem",
    "Item",
    "LogAction",
    "Operator",
    "Parameter",
    "Rule",
    "StateAction",
    "ValueRef",
    "Variable",
    "known_operand",
    "walk_conditions",
]

Operator = Literal[
    "equals", "notEquals", "greaterThan", "greaterThanEquals", "lessThan", "lessThanEquals",
    "between", "in", "notIn", "exists", "notExists", "contains", "notContains", "startsWith",
    "endsWith", "regex", "beforeDate", "afterDate", "betweenDate", "beforeTime", "afterTime",
    "betweenTime", "olderThanSeconds", "newerThanSeconds",
]  # fmt: skip
OPERATORS: tuple[str, ...] = Operator.__args__  # type: ignore[attr-defined]

_JS_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
ValueType = Literal["number", "text", "boolean", "date"]


class ValueRef(Model):
    """A value source: ``event`` (dot path), ``state`` (variable), ``variable`` (parameter),
    ``literal`` or ``now``."""

    type: Literal["event", "state", "variable", "literal", "now"]
    value: Any = None

    @model_validator(mode="after")
    def _needs_value(self) -> ValueRef:
        if self.type in ("event", "state", "variable") and (
            not isinstance(self.value, str) or not self.value
        ):
            raise ValueError(f"a {self.type} value needs a non-empty string 'value'")
        return self


class Parameter(Model):
    name: str
    type: ValueType = "text"
    default: Any = None
    required: bool | None = None

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


class Variable(Model):
    name: str
    type: Literal["number", "text", "boolean"]
    default: Any = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not _JS_IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a valid JavaScript identifier")
        return name

    @model_validator(mode="after")
    def _typed_default(self) -> Variable:
        expected = {"number": (int, float), "text": (str,), "boolean": (bool,)}[self.type]
        if self.default is None:
            object.__setattr__(
                self, "default", {"number": 0, "text": "", "boolean": False}[self.type]
            )
        elif not isinstance(self.default, expected) or (
            self.type == "number" and isinstance(self.default, bool)
        ):
            raise ValueError(f"default {self.default!r} is not a {self.type}")
        return self


class CaptureField(Model):
    name: str
    type: Literal["number", "text", "boolean", "date"] = "text"


class StateAction(Model):
    id: str
    type: Literal["state"] = "state"
    op: Literal["increment", "decrement", "set"]
    variable: str
    value: ValueRef = Field(default_factory=lambda: ValueRef(type="literal", value=1))


class LogAction(Model):
    id: str
    type: Literal["log"] = "log"
    name: str | None = None
    captures: dict[str, ValueRef] = Field(default_factory=dict)


class ExecAction(Model):
    id: str
    type: Literal["exec"] = "exec"
    trigger_id: str
    message: str | None = None


Action = Annotated[StateAction | LogAction | ExecAction, Field(discriminator="type")]


class Execution(Model):
    mode: Literal["sequential", "parallel"] = "sequential"
    on_error: Literal["continue", "stop"] = "continue"


class Condition(Model):
    """``LEFT operator RIGHT``. ``between``-style operators take a two-item list of values or a
    value that resolves to a two-item list."""

    field: ValueRef
    operator: Operator
    value: ValueRef | list[ValueRef] | None = None
    actions: list[str] = Field(default_factory=list)

    @field_validator("value")
    @classmethod
    def _usable(cls, value: ValueRef | list[ValueRef] | None, info: ValidationInfo) -> Any:
        """A literal (or ``now``) the operator can never use is refused here; a parameter's
        value is checked when its business rule is compiled, an event's or a state
        variable's per event."""
        operator = info.data.get("operator")
        if operator is None or value is None:
            return value
        if isinstance(value, list):
            if len(value) != 2:
                return value  # refused below
            problem = right_problem(operator, [known_operand(v) for v in value], listed=True)
        else:
            problem = right_problem(operator, known_operand(value))
        if problem is not None:
            raise ValueError(f"operator {operator}: {problem}")
        return value

    @model_validator(mode="after")
    def _operand(self) -> Condition:
        unary = self.operator in ("exists", "notExists")
        if not unary and self.value is None:
            raise ValueError(f"operator {self.operator} needs a value")
        if isinstance(self.value, list) and len(self.value) != 2:
            raise ValueError("a list of values must have exactly two items (low, high)")
        return self


def known_operand(ref: ValueRef, params: dict[str, Any] | None = None) -> Any:
    """An operand's value where it is known before any event: a literal, ``now``
    (:data:`~pipeline.rules.operands.NOW`), or with ``params`` a parameter's value; else
    :data:`~pipeline.rules.operands.UNKNOWN`."""
    if ref.type == "literal":
        return ref.value
    if ref.type == "now":
        return NOW
    if ref.type == "variable" and params is not None:
        return params.get(ref.value, UNKNOWN)
    return UNKNOWN


class Group(Model):
    logic: Literal["AND", "OR", "NAND", "NOR"] = "AND"
    items: list[Item] = Field(min_length=1)
    actions: list[str] = Field(default_factory=list)


class ConditionItem(Model):
    type: Literal["condition"]
    data: Condition


class GroupItem(Model):
    type: Literal["group"]
    data: Group


Item = Annotated[ConditionItem | GroupItem, Field(discriminator="type")]
Group.model_rebuild()


def walk_conditions(group: Group, path: str = "when") -> list[tuple[str, Condition]]:
    """Every condition under ``group`` with its field path (``when.items[0].data``)."""
    return [(p, node) for p, node in _walk(group, path) if isinstance(node, Condition)]


def _walk(group: Group, path: str) -> list[tuple[str, Group | Condition]]:
    found: list[tuple[str, Group | Condition]] = [(path, group)]
    for index, item in enumerate(group.items):
        item_path = f"{path}.items[{index}].data"
        if isinstance(item, GroupItem):
            found.extend(_walk(item.data, item_path))
        else:
            found.append((item_path, item.data))
    return found


class Rule(Entity):
    kind: Literal["Rule"] = "Rule"
    name: str = ""
    description: str = ""
    org_id: str | None = None
    system: bool = False
    shared: bool = False
    enabled: bool = True
    parameters: list[Parameter] = Field(default_factory=list)
    variables: list[Variable] = Field(default_factory=list)
    capture_fields: list[CaptureField] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    execution: Execution = Field(default_factory=Execution)
    when: Group

    @model_validator(mode="after")
    def _references(self) -> Rule:
        if (self.org_id is None) == (not self.system):
            raise ValueError("give exactly one of orgId or system: true")
        problems: list[str] = []
        for label, names in (
            ("parameters", [p.name for p in self.parameters]),
            ("variables", [v.name for v in self.variables]),
            ("captureFields", [c.name for c in self.capture_fields]),
            ("actions", [a.id for a in self.actions]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"{label}: duplicate name(s) {dupes}")
        params = {p.name for p in self.parameters}
        variables = {v.name for v in self.variables}
        captures = {c.name for c in self.capture_fields}
        action_ids = {a.id for a in self.actions}

        def check_ref(ref: ValueRef, where: str) -> None:
            if ref.type == "state" and ref.value not in variables:
                problems.append(f"{where}: unknown state variable {ref.value!r}")
            if ref.type == "variable" and ref.value not in params:
                problems.append(f"{where}: unknown parameter {ref.value!r}")

        for index, action in enumerate(self.actions):
            where = f"actions[{index}]"
            if isinstance(action, StateAction):
                if action.variable not in variables:
                    problems.append(f"{where}.variable: unknown state variable {action.variable!r}")
                check_ref(action.value, f"{where}.value")
            elif isinstance(action, LogAction):
                for name, ref in action.captures.items():
                    if name not in captures:
                        problems.append(f"{where}.captures.{name}: not a declared capture field")
                    check_ref(ref, f"{where}.captures.{name}")
        for path, node in _walk(self.when, "when"):
            for action_id in node.actions:
                if action_id not in action_ids:
                    problems.append(f"{path}.actions: unknown action {action_id!r}")
            if isinstance(node, Condition):
                check_ref(node.field, f"{path}.field")
                operands = node.value if isinstance(node.value, list) else [node.value]
                for operand in operands:
                    if operand is not None:
                        check_ref(operand, f"{path}.value")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AssetFilter(Model):
    template_ids: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    asset_ids: list[str] = Field(default_factory=list)


class BusinessRule(Entity):
    kind: Literal["BusinessRule"] = "BusinessRule"
    name: str = ""
    rule_id: str
    org_id: str
    include_children: bool = False
    assets: AssetFilter = Field(default_factory=AssetFilter)
    parameters: dict[str, Any] = Field(default_factory=dict)
    timezone: str = "UTC"
    enabled: bool = True
    debug: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value == "dynamic":
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value
