"""Entity models of CONTRACTS.md, as frozen pydantic v2 models."""

from pipeline.models.asset import Asset
from pipeline.models.base import Entity, Model
from pipeline.models.datasource import DataSource
from pipeline.models.event import StandardEvent
from pipeline.models.org import Organization
from pipeline.models.routing import RouteGroup
from pipeline.models.rule import BusinessRule, Rule
from pipeline.models.template import AssetTemplate
from pipeline.models.trigger import Trigger

__all__ = [
    "ENTITY_KINDS",
    "Asset",
    "AssetTemplate",
    "BusinessRule",
    "DataSource",
    "Entity",
    "Model",
    "Organization",
    "RouteGroup",
    "Rule",
    "StandardEvent",
    "Trigger",
]

ENTITY_KINDS: dict[str, type[Entity]] = {
    cls.__name__: cls
    for cls in (
        Organization,
        DataSource,
        AssetTemplate,
        Asset,
        RouteGroup,
        Trigger,
        Rule,
        BusinessRule,
    )
}
