"""Assets: devices or any event source bound to a template and route groups."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from eventray.pipeline.models.base import Entity, Model

__all__ = ["Asset", "AssetProtocol", "MqttCredentials"]


class MqttCredentials(Model):
    username: str
    password: str


class AssetProtocol(Model):
    type: Literal["http", "mqtt"]
    mqtt: MqttCredentials | None = None


class Asset(Entity):
    kind: Literal["Asset"] = "Asset"
    org_id: str
    asset_uuid: str = Field(alias="assetUUID")
    name: str
    template_id: str
    route_group_ids: list[str] = Field(min_length=1, max_length=3)
    enabled: bool = True
    debug_enabled: bool = False
    tags: list[str] = Field(default_factory=list)
    protocol: AssetProtocol | None = None
