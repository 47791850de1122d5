"""Data sources: ingestion endpoints with their authentication and asset binding."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from eventray.pipeline.models.base import Entity, Model

__all__ = [
    "ApiKeyAuth",
    "ApiTokenAuth",
    "AssetBind",
    "Auth",
    "DataSource",
    "IpAllowlistAuth",
    "JwtAuth",
    "NoAuth",
    "OAuth2Auth",
]


class ApiKeyAuth(Model):
    type: Literal["apiKey"] = "apiKey"
    in_: Literal["header", "query"] = Field(alias="in")
    name: str
    key: str = Field(min_length=20)


class JwtAuth(Model):
    type: Literal["jwt"] = "jwt"
    secret: str = Field(min_length=1)
    algorithms: list[Literal["HS256", "HS512"]] = Field(min_length=1)
    header: str = "Authorization"


class OAuth2Auth(Model):
    """Bearer tokens (``Authorization: Bearer <JWT>``) signed by a key of the JWKS at
    ``jwks_url``; ``iss`` and ``aud`` must match ``issuer`` and ``audience`` when given."""

    type: Literal["oauth2"] = "oauth2"
    jwks_url: str
    audience: str | None = None
    issuer: str | None = None

    @field_validator("jwks_url")
    @classmethod
    def _absolute_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{url!r} is not an absolute https URL")
        return url


class IpAllowlistAuth(Model):
    type: Literal["ipAllowlist"] = "ipAllowlist"
    cidrs: list[str] = Field(min_length=1)

    @field_validator("cidrs")
    @classmethod
    def _valid_cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network: {exc}") from exc
        return cidrs


class NoAuth(Model):
    type: Literal["none"] = "none"


class ApiTokenAuth(Model):
    """``Authorization: Bearer ert_...``: an eventray API token of role ``ingest`` whose
    organization holds the data source's (see :mod:`eventray.pipeline.ingest_tokens`)."""

    type: Literal["apiToken"] = "apiToken"


Auth = Annotated[
    ApiKeyAuth | JwtAuth | OAuth2Auth | IpAllowlistAuth | ApiTokenAuth | NoAuth,
    Field(discriminator="type"),
]


class AssetBind(Model):
    """How an ingested body names its asset: one fixed asset, or the first present dot path."""

    fixed_asset_id: str | None = None
    uuid_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one(self) -> AssetBind:
        if (self.fixed_asset_id is None) == (not self.uuid_fields):
            raise ValueError("give exactly one of fixedAssetId or uuidFields")
        return self


class DataSource(Entity):
    kind: Literal["DataSource"] = "DataSource"
    org_id: str
    name: str
    enabled: bool = True
    protocol: Literal["http", "mqtt"] = "http"
    auth: Auth
    asset_bind: AssetBind
