"""Typed settings: one frozen tree, read once at the composition root.

Environment variables use the prefix ``EVENTRAY_`` and ``__`` between levels, e.g.
``EVENTRAY_SCRIPTS__TIME_LIMIT_S=0.5``. Nothing here is read at import time: call
:func:`load_settings` (the CLI and ``cluster`` do) and pass the result down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventray.pipeline.adapters.egress import EgressPolicy, parse_network
from eventray.pipeline.client_address import parse_networks
from eventray.pipeline.errors import SettingsError
from eventray.pipeline.jwks import JwksCache, JwksFetch
from eventray.pipeline.scaling import ScalingLimits
from eventray.pipeline.scripts.limits import ScriptLimits
from eventray.pipeline.secret_crypto import parse_key
from eventray.pipeline.storage.retention import RetentionPolicy

__all__ = [
    "ApiSettings",
    "BlobSettings",
    "IngressSettings",
    "LogSettings",
    "MetricsSettings",
    "NatsSettings",
    "PipelineSettings",
    "RaySettings",
    "RuleSettings",
    "ScriptSettings",
    "SecretsSettings",
    "Settings",
    "StoreSettings",
    "TriggerSettings",
    "load_settings",
]


_MIB = 1024 * 1024
_GIB = 1024 * _MIB
_MIN_STREAM_MIB = 64
_NAMESPACE_MAX = 63
_NAMESPACE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
JWKS_ALLOW_SETTING = "ingress.jwks_allow_networks"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScriptSettings(_Section):
    """QuickJS execution limits and the compiled-script cache."""

    time_limit_s: PositiveFloat = 1.0
    memory_limit_mb: PositiveInt = 32
    stack_limit_kb: PositiveInt = 512
    max_result_kb: PositiveInt = Field(
        default=1024, description="largest template result one event may return (its JSON)"
    )
    cache_capacity: PositiveInt = Field(default=256, description="warm contexts kept in L0")
    batch_size: PositiveInt = Field(default=1000, description="events per crossing into JS")
    isolate: bool = Field(
        default=True,
        description=(
            "run each lane's QuickJS contexts in a child process, so a native QuickJS crash "
            "(possible on out-of-memory) fails one event instead of the lane"
        ),
    )

    def limits(self) -> ScriptLimits:
        return ScriptLimits(
            time_s=self.time_limit_s,
            memory_bytes=self.memory_limit_mb * 1024 * 1024,
            stack_bytes=self.stack_limit_kb * 1024,
            max_result_bytes=self.max_result_kb * 1024,
        )


class RuleSettings(_Section):
    """Rule engine behaviour."""

    max_trace_events: PositiveInt = Field(
        default=10_000, description="upper bound of events one test-mode run accepts"
    )


class NatsSettings(_Section):
    """The event bus. Without ``url`` the embedded nats-server is started.

    Retention: the stream keeps messages after they are acknowledged (limits retention), as a
    replay window, and drops its oldest messages once it holds ``max_bytes`` or they are older
    than ``max_age_s`` (discard old), so a publish never fails for want of room. The defaults
    bound the disk one machine gives the stream: 8 GiB is ~1.7 h of the issue's full rate
    (3,500 events/s of ~400 B, ~120 GB a day) and days of a typical one; 3 days covers a
    weekend's outage, after which the stream would drop unprocessed events by age. The cap
    drops unprocessed events only when more than 8 GiB wait: with the ingress refusing past
    ``ingress.max_queue_s`` of queued work, that needs lanes down or far behind for hours; the
    ingress warns when it happens.
    """

    url: str | None = None
    stream: str = "EVENTRAY"
    subject_prefix: str = "eventray.in"
    trigger_subject: str = "eventray.triggers"
    config_subject: str = Field(
        default="eventray.config", description="core NATS subject of 'entities changed'"
    )
    storage: Literal["file", "memory"] = "file"
    replicas: PositiveInt = 1
    max_bytes: int = Field(
        default=8 * _GIB,
        description=(
            "the stream's size cap; past it, its oldest messages are dropped (-1 = unlimited, "
            f"else at least {_MIN_STREAM_MIB} MiB)"
        ),
    )
    max_age_s: float = Field(
        default=3 * 24 * 3600,
        ge=0,
        description="messages older than this are dropped, processed or not (0 = no age limit)",
    )
    duplicate_window_s: PositiveFloat = 600.0
    ack_wait_s: PositiveFloat = 30.0
    max_ack_pending: PositiveInt = 50_000
    sync_interval: str = Field(
        default="2m",
        description="embedded server's JetStream fsync interval; 'always' fsyncs every write",
    )

    @field_validator("max_bytes")
    @classmethod
    def _sensible_cap(cls, value: int) -> int:
        """A cap under a few batches' worth would drop events before any lane could take them,
        and 0 or other negative values mean nothing to JetStream."""
        if value != -1 and value < _MIN_STREAM_MIB * _MIB:
            raise ValueError(
                f"max_bytes must be -1 (unlimited) or at least {_MIN_STREAM_MIB} MiB "
                f"({_MIN_STREAM_MIB * _MIB} bytes), not {value}"
            )
        return value


class StoreSettings(_Section):
    """The event store: embedded chDB, or ClickHouse over HTTP when ``clickhouse_url`` is set."""

    clickhouse_url: str | None = None
    database: str = "eventray"
    retention_days: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="per table over the built-in defaults, e.g. {logs_rule: 30}",
    )
    org_retention_days: dict[str, dict[str, PositiveInt]] = Field(
        default_factory=dict, description="per org, per table"
    )
    log_detail: Literal["errors", "all"] = Field(
        default="errors",
        description="errors: per-event logs only for failures, debug assets and rules that acted",
    )

    flush_interval_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "the store actor: rows accepted into its write-ahead log (in data_dir/store-log) "
            "are inserted at least this often; 0 inserts each batch as soon as it can"
        ),
    )
    flush_rows: PositiveInt = Field(
        default=50_000, description="the store actor: insert sooner once this many rows wait"
    )
    fsync: bool = Field(
        default=False,
        description="the store actor: fsync its write-ahead log on every batch (machine crashes)",
    )

    def retention(self) -> RetentionPolicy:
        """Days per table, with the per-organization overrides."""
        return RetentionPolicy(
            defaults=dict(self.retention_days),
            overrides={org: dict(t) for org, t in self.org_retention_days.items()},
        )


class BlobSettings(_Section):
    """The script cache's L2: a local directory, or MinIO/S3 when ``endpoint`` is set."""

    endpoint: str | None = None
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "eventray"
    secure: bool = False


class PipelineSettings(_Section):
    """Topology: how many partitions, lanes and pool actors, and batch sizes."""

    partitions: PositiveInt = 4
    lanes: PositiveInt = 2
    batch_size: PositiveInt = 1000
    fetch_timeout_s: PositiveFloat = 0.5
    linger_s: PositiveFloat = 0.005
    rebalance_interval_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "how often the stack measures each partition's load and moves a partition from "
            "the busiest lane to the idlest if that evens them out (0: never)"
        ),
    )
    rules_in_lane: bool | None = Field(
        default=None,
        description=(
            "the older switch for rule_actors: true = rule_actors 0 (rules in the lanes), "
            "false = one rule actor per partition; after loading it always says whether rules "
            "run in the lanes"
        ),
    )
    script_actors: int = Field(
        default=0,
        ge=0,
        description=(
            "0: every lane runs scripts in its own script host (the default, measured best, "
            "see the README's Per-stage topology); n: a pool of n ScriptExecutorActors that "
            "every lane sends its batches' scripts to, scaled apart from the lanes"
        ),
    )
    rule_actors: int = Field(
        default=0,
        ge=0,
        description=(
            "0: each lane evaluates its partitions' rules (measured ~30% less CPU per event); "
            "n: n rule actors, each the single owner of the partitions p with p % n == its "
            "index (at most pipeline.partitions)"
        ),
    )
    stop_timeout_s: PositiveFloat = Field(
        default=10.0,
        description=(
            "on Ctrl-C or SIGTERM, how long the lanes may take to finish the batches in hand; "
            "what is unfinished by then is abandoned unacknowledged, and redelivered at the "
            "next start"
        ),
    )
    lanes_min: PositiveInt | None = Field(
        default=None,
        description=(
            "fewest lanes the lag-driven scaling keeps (None: ``lanes``); scaling is on when "
            "lanes_min < lanes_max"
        ),
    )
    lanes_max: PositiveInt | None = Field(
        default=None,
        description="most lanes the scaling adds, at most ``partitions`` (None: ``lanes``)",
    )
    scale_up_lag: PositiveInt = Field(
        default=2000,
        description="add a lane when the total consumer lag stayed at least this (events) for "
        "scale_window_s and did not fall",
    )
    scale_down_lag: int = Field(
        default=300,
        ge=0,
        description="remove a lane when the total lag stayed at most this for scale_window_s "
        "(and the remaining lanes would be at most scale_down_busy busy)",
    )
    scale_down_busy: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="busy share the remaining lanes may reach after a removal",
    )
    scale_window_s: PositiveFloat = Field(
        default=15.0, description="how long lag must agree before a lane is added or removed"
    )
    scale_cooldown_s: float = Field(
        default=30.0, ge=0, description="no other scaling decision for this long after one"
    )

    @model_validator(mode="after")
    def _lane_bounds(self) -> PipelineSettings:
        """Bounds that cannot work are refused at load, naming the settings."""
        low, high = self.lanes_bounds
        if low > high:
            raise ValueError(f"lanes_min ({low}) must not exceed lanes_max ({high})")
        if high > self.partitions:
            raise ValueError(
                f"lanes_max ({high}) must not exceed partitions ({self.partitions}): a lane "
                "without a partition has nothing to do"
            )
        if not low <= min(self.lanes, self.partitions) <= high:
            raise ValueError(
                f"lanes ({self.lanes}, the lanes at start) must lie within lanes_min ({low}) "
                f"and lanes_max ({high})"
            )
        if self.scale_down_lag >= self.scale_up_lag:
            raise ValueError(
                f"scale_down_lag ({self.scale_down_lag}) must be below scale_up_lag "
                f"({self.scale_up_lag})"
            )
        return self

    @property
    def lanes_bounds(self) -> tuple[int, int]:
        """(lanes_min, lanes_max) with unset bounds at ``lanes``: no scaling by default."""
        start = min(self.lanes, self.partitions)
        return (self.lanes_min or min(start, self.lanes_max or start),
                self.lanes_max or max(start, self.lanes_min or start))  # fmt: skip

    def scaling_limits(self) -> ScalingLimits:
        """The lag-driven scaling policy's limits (see ``eventray.pipeline.scaling``)."""
        low, high = self.lanes_bounds
        return ScalingLimits(
            lanes_min=low,
            lanes_max=high,
            up_lag=self.scale_up_lag,
            down_lag=self.scale_down_lag,
            window_s=self.scale_window_s,
            cooldown_s=self.scale_cooldown_s,
            down_busy=self.scale_down_busy,
        )

    @model_validator(mode="after")
    def _stages(self) -> PipelineSettings:
        """Settle ``rules_in_lane`` and ``rule_actors`` into one answer, refusing what cannot
        work: a rule actor with no partition to own, or the two switches disagreeing."""
        if self.rules_in_lane is True and self.rule_actors > 0:
            raise ValueError(
                f"pipeline.rules_in_lane = true contradicts pipeline.rule_actors = "
                f"{self.rule_actors}: drop rules_in_lane (rule_actors alone says where rules run)"
            )
        rule_actors = self.rule_actors
        if self.rules_in_lane is False and rule_actors == 0:
            rule_actors = self.partitions  # the older meaning: one actor per partition
        if rule_actors > self.partitions:
            raise ValueError(
                f"pipeline.rule_actors = {rule_actors} exceeds pipeline.partitions = "
                f"{self.partitions}: each rule actor owns whole partitions, so at most "
                f"{self.partitions} can have work"
            )
        object.__setattr__(self, "rule_actors", rule_actors)
        object.__setattr__(self, "rules_in_lane", rule_actors == 0)
        return self


class IngressSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, lt=65536, description="0 = a free port")
    max_body_bytes: PositiveInt = Field(default=256 * 1024, description="one event's body")
    max_batch_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024, description="a /api/v1/events/batch body"
    )
    max_batch_items: PositiveInt = Field(
        default=10_000, description="events in one /api/v1/events/batch request (413 above)"
    )
    refused_keep_bytes: int = Field(
        default=1024, ge=0, description="how much of a refused request's body events_raw keeps"
    )
    refused_keep_per_minute: int = Field(
        default=60,
        ge=0,
        description="refused requests kept in events_raw per data source and minute (the rest "
        "are counted only)",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description=(
            "networks (CIDR) of proxies in front of the ingress whose X-Forwarded-For is "
            "believed (for ipAllowlist data sources); from any other peer it is ignored"
        ),
    )
    max_queue_s: PositiveFloat = Field(
        default=2.0,
        description=(
            "answer 429 when more than this many seconds of work (at the measured drain rate) "
            "wait in the stream (to everyone; see shed_heavy_s for the organizations sending "
            "more than their share)"
        ),
    )
    shed_heavy_s: PositiveFloat = Field(
        default=0.1,
        description=(
            "past this much queued work, answer 429 to organizations without a quota that send "
            "more than their share of the recent traffic (a flood is shed while the queue is "
            "short)"
        ),
    )
    drain_rate_prior: PositiveFloat = Field(
        default=2000.0, description="events/s assumed before the drain rate was first measured"
    )
    ack_timeout_s: PositiveFloat = Field(
        default=5.0, description="answer 503 when the stream has not acknowledged by then"
    )
    jwt_leeway_s: int = Field(
        default=30,
        ge=0,
        le=600,
        description="clock skew tolerated on exp, nbf and iat of jwt and oauth2 tokens",
    )
    jwks_ttl_s: PositiveFloat = Field(
        default=300.0,
        description="how long a JWKS is kept when its response has no Cache-Control max-age",
    )
    jwks_min_ttl_s: float = Field(
        default=30.0, ge=0, description="lower bound on a JWKS's lifetime (max-age, no-store)"
    )
    jwks_max_ttl_s: PositiveFloat = Field(
        default=3600.0,
        description="upper bound on a JWKS's lifetime: a key the provider withdraws is "
        "dropped by then",
    )
    jwks_refetch_interval_s: PositiveFloat = Field(
        default=10.0,
        description="at most one fetch per JWKS URL in this time (a token with an unknown kid "
        "asks for one; 503 Retry-After while a failed URL waits)",
    )
    jwks_stale_s: float = Field(
        default=3600.0,
        ge=0,
        description="while a JWKS cannot be fetched, its last good copy still verifies the "
        "kids it holds for this long past its expiry (0: never)",
    )
    jwks_timeout_s: PositiveFloat = Field(
        default=5.0, description="one JWKS fetch, from connecting to the last byte"
    )
    jwks_max_bytes: PositiveInt = Field(
        default=128 * 1024, description="a larger JWKS response is refused (an outage: 503)"
    )
    jwks_allow_networks: tuple[str, ...] = Field(
        default=(),
        description=(
            "networks (CIDR) a tenant's JWKS URL may reach besides public addresses; by "
            "default loopback, private, link-local (cloud metadata), CGNAT, multicast and "
            "reserved addresses are refused, after DNS resolution"
        ),
    )
    jwks_allow_http: bool = Field(
        default=False,
        description="fetch JWKS URLs over plain http too (keys without TLS can be replaced "
        "on the way: tests, or a provider inside an allowed network)",
    )

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Refused when loaded: a typo must not silently trust nobody (or everybody)."""
        return tuple(str(network) for network in parse_networks(value))

    @field_validator("jwks_allow_networks", mode="after")
    @classmethod
    def _jwks_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Refused when loaded, in normal form (as ``triggers.allow_networks``)."""
        return tuple(str(parse_network(v)) for v in value)

    @model_validator(mode="after")
    def _ttl_bounds(self) -> IngressSettings:
        if self.jwks_min_ttl_s > self.jwks_max_ttl_s:
            raise ValueError("jwks_min_ttl_s must not exceed jwks_max_ttl_s")
        return self

    def jwks_egress_policy(self) -> EgressPolicy:
        """Where the ingress may fetch tenants' key sets from."""
        return EgressPolicy.allowing(self.jwks_allow_networks, setting=JWKS_ALLOW_SETTING)

    def key_sets(self, fetch: JwksFetch) -> JwksCache:
        """The cache of OAuth2 data sources' key sets, over ``fetch``."""
        return JwksCache(
            fetch,
            ttl_s=self.jwks_ttl_s,
            min_ttl_s=self.jwks_min_ttl_s,
            max_ttl_s=self.jwks_max_ttl_s,
            refetch_interval_s=self.jwks_refetch_interval_s,
            stale_s=self.jwks_stale_s,
        )


class TriggerSettings(_Section):
    """Trigger delivery: retries, the circuit breaker, and where deliveries may connect."""

    max_attempts: PositiveInt = 5
    backoff_base_s: PositiveFloat = 0.5
    backoff_max_s: PositiveFloat = 30.0
    circuit_failures: PositiveInt = 5
    circuit_reset_s: PositiveFloat = 30.0
    concurrency: PositiveInt = 64
    secrets_file: Path | None = Field(
        default=None,
        description=(
            "per-organization secrets, {orgId: {NAME: value | {value, shared}}}, mode 0600; "
            "None: <data_dir>/secrets.yaml"
        ),
    )
    allow_networks: tuple[str, ...] = Field(
        default=(),
        description=(
            "networks (CIDR) deliveries may reach besides public addresses; by default "
            "loopback, private, link-local (cloud metadata), CGNAT, multicast and reserved "
            "addresses are refused, after DNS resolution and on every redirect"
        ),
    )

    @field_validator("allow_networks", mode="after")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Refused when loaded, so a typo stops the stack instead of every delivery; kept in
        normal form (``127.0.0.1`` becomes ``127.0.0.1/32``)."""
        return tuple(str(parse_network(v)) for v in value)

    def egress_policy(self) -> EgressPolicy:
        """The policy the trigger senders apply."""
        return EgressPolicy.allowing(self.allow_networks)


class SecretsSettings(_Section):
    """The encrypted secret store behind ``{{secrets.NAME}}`` (written through the management
    API and ``eventray secrets``), sealed with AES-256-GCM under the operator's key. A key is
    base64 of 32 random bytes (``eventray secrets generate-key``); it is never logged, shown
    or stored by eventray. Without one the store is off: nothing can be written to it, and
    ``{{secrets.NAME}}`` resolves from the secrets file and the environment only."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    key: SecretStr | None = Field(default=None, description="the key, base64 of 32 bytes")
    key_file: Path | None = Field(
        default=None, description="a file holding the key (base64), mode 0600; instead of key"
    )
    previous_key: SecretStr | None = Field(
        default=None,
        description="during a key rotation: the key entries may still be sealed with, until "
        "'eventray secrets rotate-key' re-sealed them",
    )
    previous_key_file: Path | None = Field(default=None, description="previous_key from a file")
    store_file: Path | None = Field(
        default=None, description="the embedded store; None: <data_dir>/secrets.enc"
    )
    check_interval_s: PositiveFloat = Field(
        default=1.0,
        description="how often, at most, a lane looks for changed secrets (store and file)",
    )

    @field_validator("key", "previous_key", mode="after")
    @classmethod
    def _key_size(cls, value: SecretStr | None) -> SecretStr | None:
        """A key that is not 32 bytes of base64 stops the settings from loading (the message
        never holds it)."""
        if value is not None:
            parse_key(value.get_secret_value(), "the key")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SecretsSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("give key or key_file, not both")
        if self.previous_key is not None and self.previous_key_file is not None:
            raise ValueError("give previous_key or previous_key_file, not both")
        if (self.previous_key or self.previous_key_file) and not (self.key or self.key_file):
            raise ValueError("a previous key needs the current one (key or key_file)")
        return self

    @property
    def configured(self) -> bool:
        """Whether a key is given (the store is on)."""
        return self.key is not None or self.key_file is not None


class RaySettings(_Section):
    """Where Ray runs and what the actors ask of it.

    Actors declare CPUs so the Ray autoscaler (and a KubeRay cluster) sees the demand of the
    lanes it is asked to run: a lane is a loop plus a script host child that together keep
    about half a core busy at capacity; the other actors mostly wait on the network.

    ``namespace`` holds the stack's named actors (``store``, ``ingress``, ``lane-0``...): two
    stacks with different namespaces share one Ray cluster without finding each other's
    actors, and every command that attaches to a running stack uses the namespace its
    ``stack.json`` records.
    """

    address: str | None = Field(default=None, description="None: start a local Ray")
    num_cpus: PositiveInt | None = Field(
        default=None,
        description=(
            "logical CPUs of the local head (None: the machine's, raised to what lanes_max "
            "lanes and the other actors declare, so a local stack always fits)"
        ),
    )
    lane_cpus: float = Field(default=0.5, ge=0, description="CPUs each lane actor declares")
    actor_cpus: float = Field(
        default=0.05,
        ge=0,
        description="CPUs each other actor (ingress, store, api, replay, rule partitions) declares",
    )
    lane_strategy: Literal["SPREAD", "DEFAULT"] = Field(
        default="SPREAD",
        description="Ray scheduling strategy of the lanes: SPREAD puts them on different nodes",
    )
    placement_timeout_s: PositiveFloat = Field(
        default=60.0,
        description=(
            "how long a new lane may wait for a node with lane_cpus free before the start "
            "fails (or a scaling step is given up) with the reason"
        ),
    )
    include_dashboard: bool = Field(
        default=True,
        description=(
            "start the Ray dashboard with a local Ray (actors, their logs, Ray's metrics); "
            "measured here: ~220 MB more PSS (nine module processes) and ~2.5% of a core idle"
        ),
    )
    dashboard_port: int = Field(
        default=8265, ge=0, lt=65536, description="the local dashboard's port; 0 = a free port"
    )
    namespace: str = Field(
        default="eventray",
        description=(
            "the Ray namespace of this stack's actors; one per stack sharing a cluster "
            "(letters, digits, '-', '_' and '.', starting with a letter or digit, at most "
            f"{_NAMESPACE_MAX} characters)"
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _ray_namespace(cls, value: str) -> str:
        """Ray takes any non-empty string; this is narrower, so a namespace is also usable as
        a Kubernetes label value and in a file name, and is never one of Ray's own
        (``_ray_internal_...``)."""
        if not _NAMESPACE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a usable Ray namespace: 1-{_NAMESPACE_MAX} of letters, "
                "digits, '-', '_' and '.', starting and ending with a letter or digit"
            )
        return value


class MetricsSettings(_Section):
    """Prometheus ``/metrics`` of the stack, served by the process that runs it, and the
    stage metrics the actors record through ``ray.util.metrics`` for Ray's own export."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, lt=65536, description="0 = a free port")
    ray: bool = Field(
        default=True, description="record stage metrics through ray.util.metrics as well"
    )
    ray_interval_s: PositiveFloat = Field(
        default=5.0,
        description="how often a lane sets its lag and lane gauges and trigger counters for Ray",
    )
    actor_timeout_s: PositiveFloat = Field(
        default=2.0,
        description=(
            "how long a scrape or `eventray status` waits for one actor's answer; an actor "
            "that does not answer in time is reported as stuck"
        ),
    )


class LogSettings(_Section):
    """How every actor and the driver log (see ``eventray.config.logs``)."""

    format: Literal["json", "text"] = Field(
        default="json", description="json: one object a line, with the event's ids as fields"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ApiSettings(_Section):
    """The management API (``/api/v1/manage``, ``/docs``), served beside the ingress."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8089, ge=0, lt=65536, description="0 = a free port")
    max_body_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024, description="larger request bodies are answered 413"
    )


class MqttSettings(_Section):
    """MQTT ingestion on the embedded nats-server's MQTT listener: a device logs in with its
    asset's ``protocol.mqtt`` credentials and publishes to
    ``eventray/mqtt/{dataSourceId}/{assetUUID}/up`` (see ``eventray.pipeline.mqtt``). With an
    operator's NATS (``nats.url``) the MQTT listener and its users are the operator's."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="0.0.0.0 to take devices on the network")
    port: int = Field(default=1883, ge=0, lt=65536, description="0 = a free port")
    bcrypt_cost: int = Field(
        default=8,
        ge=4,
        le=14,
        description=(
            "bcrypt cost of device passwords the broker checks at every connect: each step "
            "doubles it (8: ~45 ms of CPU per connect on this machine, 10: ~180 ms)"
        ),
    )
    sync_interval_s: PositiveFloat = Field(
        default=1.0,
        description=(
            "how often the broker's device users are compared with the configuration (a "
            "disabled or deleted asset, or a changed password, is disconnected within it)"
        ),
    )


class Settings(BaseSettings):
    """All of eventray's settings."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTRAY_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print a key or a password
    )

    data_dir: Path = Field(
        default=Path(".eventray"), description="where embedded stores and caches keep files"
    )
    config_dir: Path | None = Field(default=None, description="entities to load at start")
    scripts: ScriptSettings = ScriptSettings()
    rules: RuleSettings = RuleSettings()
    redis_url: str | None = Field(default=None, description="None: start the embedded server")
    mongodb_url: str | None = Field(default=None, description="None: the embedded file store")
    nats: NatsSettings = NatsSettings()
    store: StoreSettings = StoreSettings()
    blobs: BlobSettings = BlobSettings()
    pipeline: PipelineSettings = PipelineSettings()
    ingress: IngressSettings = IngressSettings()
    triggers: TriggerSettings = TriggerSettings()
    ray: RaySettings = RaySettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    mqtt: MqttSettings = MqttSettings()
    api: ApiSettings = ApiSettings()
    secrets: SecretsSettings = SecretsSettings()

    @model_validator(mode="after")
    def _lanes_fit_the_local_head(self) -> Settings:
        """A local head given fewer CPUs than the actors declare would leave lanes pending for
        ever: refused at load, with the numbers."""
        need = self.cpus_declared()
        r = self.ray
        if r.address is None and r.num_cpus is not None and r.num_cpus < need:
            raise ValueError(
                f"ray.num_cpus ({r.num_cpus}) is below what the actors declare ({need:g}: "
                f"{self.pipeline.lanes_bounds[1]} lanes x ray.lane_cpus {r.lane_cpus:g} plus "
                f"the other actors x ray.actor_cpus {r.actor_cpus:g}); raise it or lower those"
            )
        return self

    def cpus_declared(self) -> float:
        """Logical CPUs the stack's actors declare at most (lanes_max lanes)."""
        p = self.pipeline
        others = 4 + p.rule_actors  # store, ingress, api, replay, the rule actors
        # Script executors do a lane's CPU work (the scripts): they declare what a lane does.
        lane_like = p.lanes_bounds[1] + p.script_actors
        return lane_like * self.ray.lane_cpus + others * self.ray.actor_cpus

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Made absolute where the settings are read: the actors that receive them run
        in other working directories."""
        return value.absolute()

    @property
    def script_cache_dir(self) -> Path:
        """L1 of the script cache."""
        return self.data_dir / "script-cache" / "l1"

    @property
    def secrets_path(self) -> Path:
        """Where ``{{secrets.NAME}}`` values are read from."""
        given = self.triggers.secrets_file
        return given.absolute() if given is not None else self.data_dir / "secrets.yaml"

    @property
    def secret_store_path(self) -> Path:
        """The encrypted secret store's file (the embedded store)."""
        given = self.secrets.store_file
        return given.absolute() if given is not None else self.data_dir / "secrets.enc"

    @property
    def blob_dir(self) -> Path:
        """The local-directory BlobStore (L2 of the script cache on the embedded stack)."""
        return self.data_dir / "blobs"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, then apply ``overrides`` (for the CLI's flags).

    Raises:
        SettingsError: values that are refused, each named by its environment variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = "EVENTRAY_" + "__".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{variable}: {error['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
