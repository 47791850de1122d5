"""Composition root: which adapter serves each port, from settings and running services.

This is the only module that builds adapters. Actors are handed a :class:`Wiring` (plain
picklable data: settings and endpoints) and call it in their own process, so no driver object
ever crosses a process boundary and no actor imports a concrete adapter; the tools and the
single-process baseline call it directly.

Each actor is handed the wiring of its role (:meth:`Wiring.for_role`): the endpoints with its
own credentials and nothing else (see :mod:`eventray.cluster.roles`), so a process holds the
passwords of what it does, never the admin's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from eventray.config.settings import Settings
from eventray.pipeline.adapters.nats_bus import JetStreamBus
from eventray.pipeline.adapters.urls import redacted
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.jwks import JwksFetch
from eventray.pipeline.ports import (
    Adapters,
    BlobStore,
    ConfigStore,
    EventStore,
    StateStore,
    TokenStore,
)
from eventray.pipeline.secret_crypto import SecretCipher
from eventray.pipeline.secret_store import SecretStore
from eventray.pipeline.secrets import SecretsSource
from eventray.pipeline.triggers.delivery import Sender

if TYPE_CHECKING:
    from eventray.cluster.roles import Role

__all__ = ["Endpoints", "NotForThisRole", "Wiring"]


class NotForThisRole(PermanentError):
    """A process asked for a server its role has no credential for (a bug in the wiring)."""


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
    nats_inbox: str = "_INBOX"

    def __repr__(self) -> str:  # Ray and tracebacks may show it: never the passwords
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            shown.append(f"{item.name}={redacted(value) if isinstance(value, str) else value!r}")
        return f"Endpoints({', '.join(shown)})"


@dataclass(frozen=True, slots=True)
class Wiring(Adapters):
    """The adapters of a running stack (see :class:`eventray.pipeline.ports.Adapters`).

    Args:
        settings: the settings tree.
        endpoints: where the services are, with this wiring's credentials.
        roles: each role's endpoints (the stack's own wiring has them; a role's has none).
    """

    settings: Settings
    endpoints: Endpoints
    roles: Mapping[Role, Endpoints] = field(default_factory=dict, repr=False)

    def for_role(self, role: Role) -> Wiring:
        """The wiring an actor of ``role`` is handed: that role's endpoints and no others.

        Raises:
            KeyError: this wiring knows no endpoints for ``role``.
        """
        return Wiring(self.settings, self.roles[role])

    def stream(self) -> JetStreamBus:
        """The stream as configured (not yet connected); partitions' consumers with the
        configured acknowledgement wait and flow control."""
        nats = self.settings.nats
        if not self.endpoints.nats_url:
            raise NotForThisRole("this process's role has no NATS credential")
        return JetStreamBus(
            url=self.endpoints.nats_url,
            inbox_prefix=self.endpoints.nats_inbox,
            stream=nats.stream,
            subject_prefix=nats.subject_prefix,
            config_subject=nats.config_subject,
            consumer={"ack_wait_s": nats.ack_wait_s, "max_ack_pending": nats.max_ack_pending},
        )

    def state_store(self) -> StateStore:
        from eventray.pipeline.adapters.redis_state import RedisStateStore

        if not self.endpoints.redis_url:
            raise NotForThisRole("this process's role has no rule-state credential")
        return RedisStateStore(url=self.endpoints.redis_url)

    def event_store(self) -> EventStore:
        database = self.settings.store.database
        if self.endpoints.clickhouse_url:
            from eventray.pipeline.adapters.clickhouse_store import ClickHouseEventStore

            return ClickHouseEventStore(url=self.endpoints.clickhouse_url, database=database)
        from eventray.pipeline.adapters.chdb_store import ChdbEventStore

        if self.endpoints.chdb_path is None:
            raise NotForThisRole("this process's role does not own the event store")
        return ChdbEventStore(path=self.endpoints.chdb_path, database=database)

    def config_store(self) -> ConfigStore:
        if self.endpoints.mongodb_url:
            from eventray.pipeline.adapters.mongo_config import MongoConfigStore

            return MongoConfigStore(url=self.endpoints.mongodb_url)
        from eventray.pipeline.adapters.file_config import FileConfigStore

        assert self.endpoints.config_dir is not None
        return FileConfigStore(root=self.endpoints.config_dir)

    def token_store(self) -> TokenStore:
        """The management API's tokens: MongoDB's ``tokens`` collection beside the entities,
        else ``<data_dir>/tokens.json`` (the file ``eventray tokens`` writes)."""
        if self.endpoints.mongodb_url:
            from eventray.pipeline.adapters.mongo_config import MongoTokenStore

            return MongoTokenStore(url=self.endpoints.mongodb_url)
        from eventray.pipeline.adapters.file_tokens import TOKENS_FILE, FileTokenStore

        return FileTokenStore(path=self.settings.data_dir / TOKENS_FILE)

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
        from eventray.pipeline.adapters.nats_sender import NatsSender
        from eventray.pipeline.adapters.senders import TriggerSenders
        from eventray.pipeline.adapters.smtp_sender import SmtpSender

        triggers = self.settings.triggers
        policy = triggers.egress_policy()
        return TriggerSenders(
            http=AiohttpSender(policy=policy, limit=triggers.concurrency),
            smtp=SmtpSender(policy=policy),
            nats=NatsSender(policy=policy),
        )

    def secrets(self) -> SecretsSource:
        """The encrypted store (with a key), then the secrets file, then the environment
        (see ``eventray.cluster.secrets_wiring``)."""
        from eventray.cluster.secrets_wiring import layered_secrets

        return layered_secrets(self.settings, self.endpoints.mongodb_url)

    def secret_store(self) -> SecretStore:
        """The encrypted secret store: MongoDB's ``secrets`` collection beside the entities,
        else ``<data_dir>/secrets.enc``."""
        from eventray.cluster.secrets_wiring import secret_store

        return secret_store(self.settings, self.endpoints.mongodb_url)

    def secret_cipher(self) -> SecretCipher | None:
        """The key (and a rotation's previous key) from ``secrets.key`` or ``key_file``, read
        in the calling process."""
        from eventray.cluster.secrets_wiring import load_cipher

        return load_cipher(self.settings.secrets)

    def jwks_fetch(self) -> JwksFetch:
        from eventray.pipeline.adapters.jwks_fetch import AiohttpJwksFetch

        ingress = self.settings.ingress
        return AiohttpJwksFetch(
            policy=ingress.jwks_egress_policy(),
            timeout_s=ingress.jwks_timeout_s,
            max_bytes=ingress.jwks_max_bytes,
            allow_http=ingress.jwks_allow_http,
        )
