"""Template execution for a mixed batch: groups events by template, one crossing per group.

This is the logic the script-executor actor wraps. It keeps no Ray or transport concerns: give
it (template, raw JSON body) pairs, get back one :class:`ScriptResult` per pair, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eventray.pipeline.errors import ScriptError
from eventray.pipeline.models.template import AssetTemplate
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.runner import ScriptResult

__all__ = ["ScriptExecutor", "ScriptJob", "TemplateExecutor"]


@dataclass(frozen=True, slots=True)
class ScriptJob:
    """One event to run: its template and its body as raw JSON bytes."""

    template: AssetTemplate
    body: bytes


class ScriptExecutor(Protocol):
    """Runs a batch's script jobs, one result per job, in order: :class:`TemplateExecutor` in
    this process (a lane's own script host), or a client of the script-executor actor pool
    (``pipeline.script_actors``), which must answer exactly as this process would."""

    def run(self, jobs: Sequence[ScriptJob], *, trace: bool = False) -> list[ScriptResult]: ...


class TemplateExecutor:
    """Runs batches of jobs through their templates' decode -> validate -> transform stages."""

    def __init__(self, cache: ScriptCache) -> None:
        self.cache = cache

    def run(self, jobs: Sequence[ScriptJob], *, trace: bool = False) -> list[ScriptResult]:
        groups: dict[str, list[int]] = {}
        templates: dict[str, AssetTemplate] = {}
        for index, job in enumerate(jobs):
            key = f"{job.template.id}\x00{job.template.content_hash}"
            groups.setdefault(key, []).append(index)
            templates[key] = job.template
        out: list[ScriptResult | None] = [None] * len(jobs)
        for key, indexes in groups.items():
            try:
                runner = self.cache.runner_for(templates[key])
            except ScriptError as exc:
                failed: ScriptResult = {"e": exc.to_dict()}
                for index in indexes:
                    out[index] = failed
                continue
            results = runner.run_raw([jobs[i].body for i in indexes], trace=trace)
            for index, result in zip(indexes, results, strict=True):
                out[index] = result
        return [result for result in out if result is not None]
