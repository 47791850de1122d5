"""Common pydantic base for every entity: camelCase on the wire, strict about unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["Entity", "Model"]


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
