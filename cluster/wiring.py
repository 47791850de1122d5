"""Composition root: which adapter serves each port, from settings and running services.

Every actor builds its adapters here, in its own process, from plain data (``Settings`` and
``Endpoints`` pickle cheaply), so no driver object ever crosses a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.catalog import Catalog, build_catalog
from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.loader import entity_from_dict
from eventray.pipeline.models import Entity
from eventray.pipeline.ports import BlobStore, ConfigStore, EventStore, StateStore
from eventray.pipeline.storage.retention import RetentionPolicy

__all__ = [
    "Endpoints",
    "catalog_from",
    "make_blob_store",
    "make_bus",
    "make_config_store",
    "make_event_store",
    "make_state_store",
    "retention_policy",
]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running services are: embedded ones started by ``eventray up`` or real ones
    named in the settings."""

    nats_url: str
    redis_url: str
    chdb_path: Path | None
    clickhouse_url: str | None
    config_dir: Path | None
    mongodb_url: str | None
    blob_dir: Path | None


def make_bus(settings: Settings, endpoints: Endpoints) -> JetStreamBus:
    """The stream as configured (not yet connected)."""
    return JetStreamBus(
        url=endpoints.nats_url,
        stream=settings.nats.stream,
        subject_prefix=settings.nats.subject_prefix,
    )


def make_state_store(endpoints: Endpoints) -> StateStore:
    from eventray.pipeline.adapters.redis_state import RedisStateStore

    return RedisStateStore(url=endpoints.redis_url)


def make_event_store(settings: Settings, endpoints: Endpoints) -> EventStore:
    if endpoints.clickhouse_url:
        from eventray.pipeline.adapters.clickhouse_store import ClickHouseEventStore

        return ClickHouseEventStore(url=endpoints.clickhouse_url, database=settings.store.database)
    from eventray.pipeline.adapters.chdb_store import ChdbEventStore

    assert endpoints.chdb_path is not None
    return ChdbEventStore(path=endpoints.chdb_path, database=settings.store.database)


def make_config_store(endpoints: Endpoints) -> ConfigStore:
    if endpoints.mongodb_url:
        from eventray.pipeline.adapters.mongo_config import MongoConfigStore

        return MongoConfigStore(url=endpoints.mongodb_url)
    from eventray.pipeline.adapters.file_config import FileConfigStore

    assert endpoints.config_dir is not None
    return FileConfigStore(root=endpoints.config_dir)


def make_blob_store(settings: Settings, endpoints: Endpoints) -> BlobStore | None:
    if settings.blobs.endpoint:
        from eventray.pipeline.adapters.minio_blob import MinioBlobStore

        return MinioBlobStore(
            endpoint=settings.blobs.endpoint,
            access_key=settings.blobs.access_key,
            secret_key=settings.blobs.secret_key,
            bucket=settings.blobs.bucket,
            secure=settings.blobs.secure,
        )
    if endpoints.blob_dir is None:
        return None
    from eventray.pipeline.adapters.localdir import LocalDirBlobStore

    return LocalDirBlobStore(endpoints.blob_dir)


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        defaults=dict(settings.store.retention_days),
        overrides={org: dict(t) for org, t in settings.store.org_retention_days.items()},
    )


def catalog_from(store: ConfigStore, *, compile_scripts: bool = False) -> tuple[Catalog, int]:
    """The catalog the config store holds now, with its revision."""
    revision = store.revision()
    issues: list[ConfigIssue] = []
    entities: list[tuple[str, Entity]] = []
    for document in store.documents():
        entity = entity_from_dict("config store", document, issues)
        if entity is not None:
            entities.append(("config store", entity))
    if issues:
        raise ConfigError(issues)
    return build_catalog(entities, compile_scripts=compile_scripts), revision
