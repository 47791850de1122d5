"""Route groups: ordered routers deciding where each processed event goes."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from eventray.pipeline.models.base import Entity, Model
from eventray.pipeline.rules.operands import match_value_problem

__all__ = [
    "MatchRule",
    "Publish",
    "RouteGroup",
    "RouteMatch",
    "Router",
    "RouterOperator",
    "TriggerRef",
]

RouterOperator = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "nin", "exists", "regex"]


class MatchRule(Model):
    """``field operator value``. The value is checked against what the operator can use: a
    list for ``in``/``nin``, a number or a text for ``gt``..``lte``, true/false for
    ``exists``, and for ``regex`` a pattern RE2 compiles (:mod:`pipeline.patterns`)."""

    field: str = Field(min_length=1)
    operator: RouterOperator
    value: Any = Field(default=None, validate_default=True)

    @field_validator("value")
    @classmethod
    def _value_shape(cls, value: Any, info: ValidationInfo) -> Any:
        operator = info.data.get("operator")
        if operator is not None:
            problem = match_value_problem(operator, value)
            if problem is not None:
                raise ValueError(f"operator {operator}: {problem}")
        return value


class RouteMatch(Model):
    policy: Literal["all", "any"] = "all"
    rules: list[MatchRule] = Field(default_factory=list)


class TriggerRef(Model):
    trigger_id: str


# Subjects the platform itself uses: a tenant's publish route may not write into them (an
# event published into a partition would skip the ingress's authentication; one published to
# the trigger queue would be a forged delivery; "$" and "_INBOX." are the server's and clients').
RESERVED_SUBJECTS = ("eventray.", "$", "_INBOX.")
_TOKEN = re.compile(r"[^\s.*>]+")


class Publish(Model):
    subject: str = Field(min_length=1, max_length=255)

    @field_validator("subject")
    @classmethod
    def _tenant_subject(cls, subject: str) -> str:
        if not all(_TOKEN.fullmatch(token) for token in subject.split(".")):
            raise ValueError(
                f"{subject!r} is not a NATS subject to publish to (dot-separated tokens, "
                "no spaces, no wildcards)"
            )
        if subject.startswith(RESERVED_SUBJECTS) or subject in ("eventray", "_INBOX"):
            raise ValueError(
                f"{subject!r} is reserved for the platform (subjects starting with "
                f"{', '.join(RESERVED_SUBJECTS)})"
            )
        return subject


class Router(Model):
    kind: Literal["save_event", "rules", "trigger", "publish"]
    match: RouteMatch | None = None
    trigger: TriggerRef | None = None
    publish: Publish | None = None

    @model_validator(mode="after")
    def _target(self) -> Router:
        if self.kind == "trigger" and self.trigger is None:
            raise ValueError("a trigger router needs trigger.triggerId")
        if self.kind == "publish" and self.publish is None:
            raise ValueError("a publish router needs publish.subject")
        return self


class RouteGroup(Entity):
    kind: Literal["RouteGroup"] = "RouteGroup"
    org_id: str
    name: str
    version: int = 1
    enabled: bool = True
    routers: list[Router] = Field(min_length=1)
