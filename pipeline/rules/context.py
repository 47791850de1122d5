"""What one (event, business rule) evaluation works on, and the value sources that read it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from eventray.pipeline.models.rule import ValueRef
from eventray.pipeline.paths import MISSING, compile_path
from eventray.pipeline.rules.outcome import CaptureRecord, ExecIntent

__all__ = ["EvalContext", "ValueFn", "event_timezone", "value_fn"]

ValueFn = Callable[["EvalContext"], Any]


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


def value_fn(ref: ValueRef) -> ValueFn:
    """A value source read at the moment it is asked (state changes are visible)."""
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


def event_timezone(view: Mapping[str, Any], zones: Mapping[str, tzinfo] | None = None) -> tzinfo:
    """``timezone: dynamic``: the event's organization's timezone (``zones``: per organization,
    its own or the nearest ancestor's), else the event's ``metadata.timezone``, else UTC.

    Never raises: an event's bad zone name (``"Europe"`` is a directory, an overlong name is
    an OS error) must not fail the batch it is in.
    """
    if zones:
        zone = zones.get(view.get("orgId"))  # type: ignore[arg-type]
        if zone is not None:
            return zone
    metadata = view.get("metadata")
    name = metadata.get("timezone") if isinstance(metadata, dict) else None
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):
            pass
    return ZoneInfo("UTC")
