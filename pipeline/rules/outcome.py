"""What evaluating business rules produces: evaluations, state changes, captures, exec intents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventray.pipeline.errors import RuleError

__all__ = [
    "BatchOutcome",
    "CaptureRecord",
    "Evaluation",
    "ExecIntent",
    "RuleInput",
    "failed_evaluation",
]


@dataclass(frozen=True, slots=True)
class RuleInput:
    """One processed event as the rule engine sees it.

    ``view`` is the Standard Event with ``metadata.assetId`` and ``orgId`` added; ``seq`` is the
    stream sequence (None outside a stream, e.g. test mode).
    """

    event_tracker_id: str
    org_id: str
    path_key: str
    asset_id: str
    template_id: str
    view: dict[str, Any]
    tags: tuple[str, ...] = ()
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """A Log action's record (rows of ``logs_capture``)."""

    business_rule_id: str
    action_id: str
    name: str | None
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExecIntent:
    """An Exec action to deliver: the trigger, the rendered message, and the render context
    for the trigger's own ``{{placeholders}}`` (secrets are resolved only at delivery)."""

    business_rule_id: str
    action_id: str
    trigger_id: str
    message: str | None
    context: dict[str, Any]
    mode: str = "sequential"
    on_error: str = "continue"


@dataclass(slots=True)
class Evaluation:
    """One business rule evaluated on one event (rows of ``logs_rule``)."""

    event_tracker_id: str
    org_id: str
    path_key: str
    business_rule_id: str
    rule_id: str
    matched: bool
    actions: list[str] = field(default_factory=list)
    state_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    captures: list[CaptureRecord] = field(default_factory=list)
    execs: list[ExecIntent] = field(default_factory=list)
    trace: dict[str, Any] | None = None
    error: str | None = None


def failed_evaluation(
    event: RuleInput,
    business_rule_id: str,
    rule_id: str,
    state: dict[str, Any],
    changes: dict[str, dict[str, Any]],
    exc: Exception,
) -> Evaluation:
    """A failed evaluation applies nothing: its state changes are undone (``state`` is the
    working state), its actions dropped, and its error reported."""
    for var, change in changes.items():
        state[var] = change["from"]
    reason = str(exc) if isinstance(exc, RuleError) else f"{type(exc).__name__}: {exc}"
    return Evaluation(
        event.event_tracker_id, event.org_id, event.path_key, business_rule_id, rule_id, False,
        error=reason,
    )  # fmt: skip


@dataclass(slots=True)
class BatchOutcome:
    """Everything one batch produced. ``replayed`` lists events skipped because their state
    was already applied (redelivery after a crash); ``writes`` is what was committed."""

    evaluations: list[Evaluation] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)
    committed: bool = True
    seq: int = 0
