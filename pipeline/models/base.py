"""Common pydantic base for every entity: camelCase on the wire, strict about unknown fields."""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

__all__ = ["MAX_ID_LENGTH", "Entity", "Model"]

MAX_ID_LENGTH: Final = 200
# Refused in ids: "/" (an id is one segment of the management API's URLs, /assets/{id}, and
# of the MQTT topics), control characters (they reach logs, CSV exports and headers), and
# whitespace at either end (an id that differs from another only by a space is a typo).
_BAD_ID: Final = re.compile(r"[/\x00-\x1f\x7f]")


class Model(BaseModel):
    """Frozen, camelCase-aliased model that refuses unknown fields.

    Unknown fields are refused rather than ignored because a typo in a rule (``operater``) that
    is silently dropped is a rule that silently never fires.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )

    def dump(self) -> dict[str, object]:
        """The entity as users write it: camelCase, JSON-compatible, defaults included."""
        return self.model_dump(mode="json", by_alias=True)


class Entity(Model):
    """An entity loaded from YAML/JSON; ``kind`` selects the subclass, ``id`` is unique per kind."""

    id: str

    @field_validator("id")
    @classmethod
    def _addressable_id(cls, value: str) -> str:
        if not value:
            raise ValueError("an id must not be empty")
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"an id has at most {MAX_ID_LENGTH} characters")
        if value != value.strip():
            raise ValueError("an id must not start or end with whitespace")
        bad = _BAD_ID.search(value)
        if bad is not None:
            if bad.group() == "/":
                raise ValueError("an id must not contain '/' (it is one segment of API URLs)")
            raise ValueError(f"an id must not contain control character {bad.group()!r}")
        return value
