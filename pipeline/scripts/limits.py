"""Per-execution limits for scripts (time, memory, stack, result size)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScriptLimits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptLimits:
    """Limits applied to every single event's run of a template.

    Attributes:
        time_s: CPU time one event may use across all its stages.
        memory_bytes: heap one event may allocate on top of what the runtime already holds.
        stack_bytes: maximum JS stack (deep recursion fails the event, not the process).
        max_result_bytes: largest result (its JSON, UTF-8) one event may return; a bigger one
            fails that event instead of swelling the batch it travels in.
    """

    time_s: float = 1.0
    memory_bytes: int = 32 * 1024 * 1024
    stack_bytes: int = 512 * 1024
    max_result_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.time_s, self.memory_bytes, self.stack_bytes, self.max_result_bytes) <= 0:
            raise ValueError("script limits must be positive")
