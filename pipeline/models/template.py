"""Asset templates: the decode -> validate -> transform scripts and the EVA fields."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator

from eventray.pipeline.models.base import Entity, Model

__all__ = ["AssetTemplate", "DynamicField", "EvaType"]

EvaType = Literal["number", "string", "bool", "date", "geo"]


class DynamicField(Model):
    """An EVA field: a typed value extracted from the Standard Event into a typed map column."""

    field_id: int = Field(ge=0, le=65535)
    field: str
    value: str = Field(min_length=1, description="dot path into the Standard Event")
    type: EvaType
    status: Literal["active", "deprecated"] = "active"


class AssetTemplate(Entity):
    kind: Literal["AssetTemplate"] = "AssetTemplate"
    org_id: str
    name: str
    enabled: bool = True
    shared: bool = False
    asset_id_path: str | None = None
    script_processor: str | None = None
    script_validator: str | None = None
    script_conversion: str
    script_test: str | None = None
    dynamic_fields: list[DynamicField] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_field_ids(self) -> AssetTemplate:
        seen: set[int] = set()
        for item in self.dynamic_fields:
            if item.field_id in seen:
                raise ValueError(f"dynamicFields: fieldId {item.field_id} is used twice")
            seen.add(item.field_id)
        return self

    @cached_property
    def content_hash(self) -> str:
        """Hash of everything that changes what the scripts compute: the compiled-script key.
        Cached: the executor looks it up for every event."""
        digest = hashlib.sha256()
        for part in (self.script_processor, self.script_validator, self.script_conversion):
            digest.update(b"\x00" if part is None else b"\x01" + part.encode())
        return digest.hexdigest()[:32]
