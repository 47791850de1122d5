"""Entity models of CONTRACTS.md, as frozen pydantic v2 models."""

from eventray.pipeline.models.asset import Asset
from eventray.pipeline.models.base import Entity, Model
from eventray.pipeline.models.datasource import DataSource
from eventray.pipeline.models.event import StandardEvent
from eventray.pipeline.models.org import Organization
from eventray.pipeline.models.routing import RouteGroup
from eventray.pipeline.models.rule import BusinessRule, Rule
from eventray.pipeline.models.template import AssetTemplate
from eventray.pipeline.models.trigger import Trigger

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
