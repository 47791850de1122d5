"""Roles: each actor gets the credentials of what it does, not the stack's.

The embedded servers used to know one password, held by every actor; the ingress (the process
that faces the network) could then consume partitions, forge trigger deliveries or rewrite rule
state, and a lane could inject events into a partition without an API key. Now:

* ``admin`` (the driver, ``eventray up``, ``stack.json``, ``apply``): NATS user ``admin`` and
  Valkey user ``default``, who may do anything.
* ``ingress``: NATS user ``ingress`` (publish into the partitions, read consumer lag); no Valkey
  (it never touches rule state).
* ``lane``: NATS user ``lane`` (consume and acknowledge, manage its consumers, the trigger queue,
  ``publish`` routes; never publish into a partition); Valkey user ``rules`` (the ``state:*``
  and ``fence:*`` keys, with the commands the state store sends).
* ``rules`` (rule-partition actors): Valkey user ``rules``; no NATS (they talk to lanes over
  Ray).
* ``store``: neither (it writes chDB or ClickHouse, the only role that gets their address).
* ``api`` (the management API, the other process facing the network): NATS user ``api``, which
  may only announce a config change (and hear it) and read the partitions' consumer info
  (the Overview's lag); no Valkey. It writes the config and token
  stores, which every role's endpoints name.
* ``replay`` (the actor that runs DLQ redrive and stream replay for the API; it faces no
  network and is reached over Ray only): NATS user ``replay``, which appends copies to the
  partitions and failed deliveries to the trigger queue, reads the stream (its info, a message
  by sequence, a consumer of its own positioned by time or sequence) and the lanes' consumers'
  progress; no Valkey, no event store (it reads and records through the store actor). The API
  keeps its narrow user: a process facing the network never holds a credential that can publish
  into a partition.

The exact subjects are :func:`nats_roles`'s, the Valkey rules :data:`VALKEY_USERS`'. Every
role's NATS inbox is ``_INBOX.<role>``, so a role may subscribe to its own replies only, never to
another's (the lanes' deliveries travel on them).

Servers named in the settings (``EVENTRAY_NATS__URL``, ``EVENTRAY_REDIS_URL``) are the
operator's: their URL is handed to every role that uses the server, and limiting what each
may do is the operator's business (:func:`nats_roles` says what each role needs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Final, Literal

from eventray.cluster.services.nats_server import ADMIN, NatsPermissions
from eventray.config.settings import NatsSettings
from eventray.pipeline.adapters.nats_bus import partition_durable
from eventray.pipeline.adapters.nats_uplinks import BRIDGE_DURABLE, MQTT_STORE
from eventray.pipeline.mqtt import UPLINK_SUBJECTS

if TYPE_CHECKING:
    from eventray.cluster.services.nats_server import RunningNats
    from eventray.cluster.services.redis_server import RunningRedis
    from eventray.cluster.wiring import Endpoints

__all__ = [
    "ROLES",
    "VALKEY_USERS",
    "Role",
    "inbox_of",
    "nats_roles",
    "role_endpoints",
]

Role = Literal["admin", "ingress", "lane", "rules", "store", "api", "replay"]
ROLES: Final[tuple[Role, ...]] = ("admin", "ingress", "lane", "rules", "store", "api", "replay")

_NATS_USER: Final[dict[Role, str | None]] = {
    "admin": ADMIN, "ingress": "ingress", "lane": "lane", "rules": None, "store": None,
    "api": "api", "replay": "replay",
}  # fmt: skip
_VALKEY_USER: Final[dict[Role, str | None]] = {
    "admin": "default", "ingress": None, "lane": "rules", "rules": "rules", "store": None,
    "api": None, "replay": None,
}  # fmt: skip

VALKEY_USERS: Final[dict[str, str]] = {
    # What RedisStateStore sends: MGET to load, EVALSHA of the commit script (GET and SET inside
    # it are checked against these rules too), SCRIPT LOAD when the server lost the script.
    "rules": "resetkeys ~state:* ~fence:* resetchannels -@all "
    "+mget +get +set +evalsha +script|load +ping",
}
"""The embedded Valkey's users besides ``default`` (the admin), with their ACL rules."""

# JetStream and server APIs a lane must not call. Its publish permission is "everything but":
# a ``publish`` route may name any subject, so no allow list can be written for it.
_LANE_NEVER: Final = (
    "$JS.API.INFO", "$JS.API.STREAM.>", "$JS.API.ACCOUNT.>", "$JS.API.META.>",
    "$JS.API.SERVER.>", "$JS.API.DIRECT.>", "$JS.EVENT.>", "$JS.FC.>", "$JSC.>", "$NRG.>",
    "$SYS.>", "$KV.>", "$O.>", "$MQTT.>", "_INBOX.>",
)  # fmt: skip


def inbox_of(role: Role) -> str:
    """The prefix of the role's NATS reply subjects (``_INBOX`` for the admin, as usual)."""
    return "_INBOX" if role == "admin" else f"_INBOX.{role}"


def nats_roles(nats: NatsSettings, *, partitions: int = 0) -> dict[str, NatsPermissions]:
    """The embedded nats-server's users besides ``admin``, with what each may do.

    * ``ingress`` takes MQTT uplinks (its share of the bridge's consumer on the broker's MQTT
      store, and of the QoS 0 queue group on ``eventray.mqtt.>``) and publishes events into
      the partitions (``{subject_prefix}.>``, a JetStream
      publish whose acknowledgement comes back on its inbox) and reads the partitions'
      consumer info for the lag it answers 429 on, and the stream's info and a message by
      sequence to notice events the stream dropped before a lane took them (read-only); it
      hears the config notice.
    * ``lane`` pulls its partitions and the trigger queue (``CONSUMER.MSG.NEXT``), acknowledges
      (``$JS.ACK.{stream}.>``), reads, creates and rewinds (deletes) their durable consumers,
      appends to the trigger queue and publishes ``publish`` routes; it hears the config
      notice. It may not publish into a partition or forge an MQTT uplink, announce a config
      change, answer anyone's request (forge a JetStream acknowledgement) or touch the stream
      itself.
    * ``replay`` appends copies and reset markers to the partitions and failed deliveries to
      the trigger queue, reads the stream's info and messages by sequence, creates an ephemeral
      consumer to read a range and deletes it, lists consumers and reads their progress. It
      may not create a durable consumer, nor create, pull from or delete the lanes' (those of
      ``partitions`` partitions: NATS subjects cannot say "every name but lane-p*"), announce
      a config change or touch the stream itself.
    """
    stream, config = nats.stream, nats.config_subject
    lane_consumers = [
        f"$JS.API.CONSUMER.{verb}.{stream}.{partition_durable(p)}{tail}"
        for p in range(partitions)
        for verb, tail in (("MSG.NEXT", ""), ("DELETE", ""), ("CREATE", ""), ("CREATE", ".>"))
    ]
    return {
        "ingress": NatsPermissions(
            publish=(
                f"{nats.subject_prefix}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.*",
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.MSG.GET.{stream}",
                # MQTT uplinks: its share of the broker's store through the bridge's consumer
                f"$JS.API.CONSUMER.MSG.NEXT.{MQTT_STORE}.{BRIDGE_DURABLE}",
                f"$JS.ACK.{MQTT_STORE}.{BRIDGE_DURABLE}.>",
                f"$JS.API.STREAM.INFO.{MQTT_STORE}",
            ),
            subscribe=(f"{inbox_of('ingress')}.>", config, UPLINK_SUBJECTS),
        ),
        "lane": NatsPermissions(
            publish=(">",),
            publish_deny=(f"{nats.subject_prefix}.>", config, UPLINK_SUBJECTS, *_LANE_NEVER),
            subscribe=(f"{inbox_of('lane')}.>", config),
        ),
        # The management API announces a config change after each write, and reads the
        # partitions' consumer info for the Overview's lag (read-only).
        "api": NatsPermissions(
            publish=(config, f"$JS.API.CONSUMER.INFO.{stream}.*"),
            subscribe=(f"{inbox_of('api')}.>", config),
        ),
        "replay": NatsPermissions(
            publish=(
                f"{nats.subject_prefix}.>",  # copies and reset markers into the partitions
                nats.trigger_subject,  # failed deliveries back on the trigger queue
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.MSG.GET.{stream}",
                # a reader of its own (ephemeral, no acknowledgements), and the lanes' progress
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",  # named by the client, ephemeral
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
                f"$JS.API.CONSUMER.INFO.{stream}.*",
                f"$JS.API.CONSUMER.DELETE.{stream}.*",
                f"$JS.API.CONSUMER.LIST.{stream}",
            ),
            # the durable consumers are the lanes': never created, consumed nor deleted
            publish_deny=(
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                *lane_consumers,
            ),
            subscribe=(f"{inbox_of('replay')}.>",),
        ),
    }


def role_endpoints(
    admin: Endpoints, *, nats: RunningNats | None = None, redis: RunningRedis | None = None
) -> dict[Role, Endpoints]:
    """Each role's endpoints: ``admin``'s, with each server's URL replaced by the role's own
    user on the embedded servers (``nats``, ``redis``; None: a server the operator named,
    whose URL every role that uses it gets) or removed where the role does not use it. The
    event store's address stays with the store (and the admin)."""
    out: dict[Role, Endpoints] = {}
    for role in ROLES:
        nats_user, valkey_user = _NATS_USER[role], _VALKEY_USER[role]
        nats_url = redis_url = ""
        if nats_user is not None:
            nats_url = admin.nats_url if nats is None else nats.url_for(nats_user)
        if valkey_user is not None:
            redis_url = admin.redis_url if redis is None else redis.url_for(valkey_user)
        keeps_store = role in ("admin", "store")
        out[role] = replace(
            admin,
            nats_url=nats_url,
            redis_url=redis_url,
            nats_inbox=inbox_of(role),
            chdb_path=admin.chdb_path if keeps_store else None,
            clickhouse_url=admin.clickhouse_url if keeps_store else None,
        )
    return out
