"""Composition root: which adapter serves each port, from settings and running services.

This is the only module that builds adapters. Actors are handed a :class:`Wiring` (plain
picklable data: settings and endpoints) and call it in their own process, so no driver object
ever crosses a process boundary and no actor imports a concrete adapter; the tools and the
single-process baseline call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.ports import Adapters, BlobStore, ConfigStore, EventStore, StateStore
from eventray.pipeline.secrets import SecretsSource
from eventray.pipeline.triggers.delivery import Sender

__all__ = ["Endpoints", "Wiring"]


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


@dataclass(frozen=True, slots=True)
class Wiring(Adapters):
    """The adapters of a running stack (see :class:`eventray.pipeline.ports.Adapters`)."""

    settings: Settings
    endpoints: Endpoints

    def stream(self) -> JetStreamBus:
        """The stream as configured (not yet connected); partitions' consumers with the
        configured acknowledgement wait and flow control."""
        nats = self.settings.nats
        return JetStreamBus(
            url=self.endpoints.nats_url,
            stream=nats.stream,
            subject_prefix=nats.subject_prefix,
            config_subject=nats.config_subject,
            consumer={"ack_wait_s": nats.ack_wait_s, "max_ack_pending": nats.max_ack_pending},
        )

    def state_store(self) -> StateStore:
        from eventray.pipeline.adapters.redis_state import RedisStateStore

        return RedisStateStore(url=self.endpoints.redis_url)

    def event_store(self) -> EventStore:
        database = self.settings.store.database
        if self.endpoints.clickhouse_url:
            from eventray.pipeline.adapters.clickhouse_store import ClickHouseEventStore

            return ClickHouseEventStore(url=self.endpoints.clickhouse_url, database=database)
        from eventray.pipeline.adapters.chdb_store import ChdbEventStore

        assert self.endpoints.chdb_path is not None
        return ChdbEventStore(path=self.endpoints.chdb_path, database=database)

    def config_store(self) -> ConfigStore:
        if self.endpoints.mongodb_url:
            from eventray.pipeline.adapters.mongo_config import MongoConfigStore

            return MongoConfigStore(url=self.endpoints.mongodb_url)
        from eventray.pipeline.adapters.file_config import FileConfigStore

        assert self.endpoints.config_dir is not None
        return FileConfigStore(root=self.endpoints.config_dir)

    def blob_store(self) -> BlobStore | None:
        blobs = self.settings.blobs
        if blobs.endpoint:
            from eventray.pipeline.adapters.minio_blob import MinioBlobStore

            return MinioBlobStore(
                endpoint=blobs.endpoint,
                access_key=blobs.access_key,
                secret_key=blobs.secret_key,
                bucket=blobs.bucket,
                secure=blobs.secure,
            )
        if self.endpoints.blob_dir is None:
            return None
        from eventray.pipeline.adapters.localdir import LocalDirBlobStore

        return LocalDirBlobStore(self.endpoints.blob_dir)

    def local_blob_store(self) -> BlobStore:
        from eventray.pipeline.adapters.localdir import LocalDirBlobStore

        return LocalDirBlobStore(self.settings.script_cache_dir)

    def sender(self) -> Sender:
        from eventray.pipeline.adapters.http_sender import AiohttpSender
        from eventray.pipeline.adapters.senders import TriggerSenders
        from eventray.pipeline.adapters.smtp_sender import SmtpSender

        triggers = self.settings.triggers
        policy = triggers.egress_policy()
        return TriggerSenders(
            http=AiohttpSender(policy=policy, limit=triggers.concurrency),
            smtp=SmtpSender(policy=policy),
        )

    def secrets(self) -> SecretsSource:
        from eventray.pipeline.adapters.secrets_file import FileSecrets

        return FileSecrets(self.settings.secrets_path)
