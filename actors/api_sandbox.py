"""The management API's test runs (``POST /api/v1/manage/asset-templates/test`` and
``POST /api/v1/manage/business-rules/test``): a template's scripts on sample payloads, a
business rule in test mode on sample events, over bodies that need not be saved.

The console's editors call them on what is being edited; the decisions (scope, limits, the
engines) are :mod:`eventray.pipeline.management.sandbox`'s. Viewers may run them: they change
nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eventray.actors.api_auth import Viewer
from eventray.actors.api_schema import ErrorBody
from eventray.pipeline.management import EntityService
from eventray.pipeline.management.sandbox import (
    MAX_SAMPLES,
    run_rule_test,
    run_template_test,
)

__all__ = ["RuleTestBody", "TemplateTestBody", "sandbox_router"]

_PREFIX = "/api/v1/manage"


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TemplateTestBody(_Wire):
    """An AssetTemplate document (saved or not) and the payloads to run it on."""

    template: dict[str, Any] = Field(description="an AssetTemplate document, as `apply` takes")
    payloads: list[Any] = Field(max_length=MAX_SAMPLES, description="raw payloads (a string "
                                "for a codec or a script that decodes text)")  # fmt: skip


class RuleTestBody(_Wire):
    """A BusinessRule document (saved or not), optionally its Rule, and the events."""

    business_rule: dict[str, Any] = Field(description="a BusinessRule document")
    rule: dict[str, Any] | None = Field(default=None, description="the Rule it names, in "
                                        "place of the stored one (its id is the ruleId)")  # fmt: skip
    events: list[dict[str, Any]] = Field(max_length=MAX_SAMPLES, description="Standard Events, "
                                         "or {event, at?, assetId?, orgId?}")  # fmt: skip
    state: dict[str, Any] | None = Field(default=None, description="the sandbox's starting "
                                         "state (as `eventray rules test --state`)")  # fmt: skip


class TemplateTestResult(_Wire):
    items: list[dict[str, Any]] = Field(description="per payload: each stage's output, then "
                                        "standardEvent and eva (each EVA field's value as "
                                        "stored, or rejected) or error {stage, message, "
                                        "line?}")  # fmt: skip


class RuleTestResult(_Wire):
    items: list[dict[str, Any]] = Field(description="per event: inScope, matched, error, "
                                        "trace, stateChanges, actions, captures, execs")  # fmt: skip


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {401: "no valid API token", 403: "the role may not",
               404: "unknown or outside the token's scope",
               422: "refused: each problem with its field path and reason"}  # fmt: skip
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}


def sandbox_router() -> APIRouter:
    """The test-run routes. They find on ``request.app.state`` the entity service and, when
    given, ``script_limits`` (the lanes' QuickJS limits) and ``script_host`` (a
    :class:`~eventray.pipeline.scripts.host.ScriptHost` running the scripts in a child
    process)."""
    router = APIRouter(prefix=_PREFIX)

    @router.post("/asset-templates/test", operation_id="test_asset_template",
                 tags=["asset-templates"], response_model=TemplateTestResult,
                 summary="Run a template's scripts on sample payloads",
                 description="decode -> validate -> transform with the ingest limits, as "
                 "`eventray templates test`; nothing is stored",
                 responses=_responses(401, 403, 404, 422))  # fmt: skip
    def template_test(request: Request, scope: Viewer, body: TemplateTestBody) -> dict[str, Any]:
        entities: EntityService = request.app.state.entities
        state = request.app.state
        items = run_template_test(entities, scope.principal, body.template, body.payloads,
                                  limits=getattr(state, "script_limits", None),
                                  host=getattr(state, "script_host", None))  # fmt: skip
        return {"items": items}

    @router.post("/business-rules/test", operation_id="test_business_rule",
                 tags=["business-rules"], response_model=RuleTestResult,
                 summary="Run a business rule in test mode on sample events",
                 description="the production evaluator on a sandbox state, as `eventray "
                 "rules test`; nothing is stored, no trigger is called",
                 responses=_responses(401, 403, 404, 422))  # fmt: skip
    def rule_test(request: Request, scope: Viewer, body: RuleTestBody) -> dict[str, Any]:
        entities: EntityService = request.app.state.entities
        items = run_rule_test(entities, scope.principal, body.business_rule, body.events,
                                   rule=body.rule, state=body.state)  # fmt: skip
        return {"items": items}

    return router
