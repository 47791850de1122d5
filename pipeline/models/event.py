"""The Standard Event every transform stage must produce."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from eventray.pipeline.models.base import Model

__all__ = ["StandardEvent"]


class StandardEvent(Model):
    """``{eventType, eventId, data, metadata?, created}``.

    The hot path checks this shape inside QuickJS (see ``pipeline.scripts.bundle``); this model
    is the same contract for code that handles one event at a time (CLI, tests, the API).
    """

    event_type: str = Field(min_length=1)
    event_id: str = Field(min_length=1)
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None
    created: str

    @field_validator("created")
    @classmethod
    def _iso8601(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"created must be an ISO-8601 string, got {value!r}") from exc
        return value
