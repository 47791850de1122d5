"""MQTT ingestion: the topic scheme, who may publish where, and what is refused at load.

A device connects with its asset's own credentials (``Asset.protocol.mqtt``) and publishes to

    eventray/mqtt/{dataSourceId}/{assetUUID}/up

for an ``mqtt`` data source of its organization or an ancestor's that can take it (one whose
``assetBind`` is ``uuidFields``, or ``fixedAssetId`` naming this asset). The broker maps MQTT
topics onto NATS subjects (``/`` becomes ``.``), so each device is given exactly the subjects
:func:`accounts` lists as its publish permission and nothing to subscribe to: a publish
elsewhere is dropped by the broker (and logged there as a publish violation), so a device can
only ever speak for its own asset. The topic names the asset, so an MQTT event is bound by its
topic, not by its body: a payload that is not JSON (a binary frame for a codec) binds all the
same.

Everything here is pure: the embedded broker's configuration is written from
:func:`accounts` by :mod:`eventray.cluster.mqtt_accounts`, the bridge into the event stream
parses subjects with :func:`parse_uplink`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from eventray.pipeline.catalog import Catalog
from eventray.pipeline.models import Asset, DataSource
from eventray.pipeline.ports import Uplink

__all__ = [
    "BCRYPT_HASH",
    "RESERVED_USERS",
    "TOPIC_ROOT",
    "UPLINK_SUBJECTS",
    "MqttAccount",
    "Uplink",
    "accounts",
    "is_password_hash",
    "mqtt_problems",
    "parse_uplink",
    "tracker_id_of",
    "uplink_subject",
    "uplink_topic",
]

TOPIC_ROOT = "eventray/mqtt"
UPLINK_SUBJECTS = "eventray.mqtt.>"
"""Every uplink's NATS subject (what the bridge consumes; never a tenant's ``publish``)."""
_STORED_PREFIX = "$MQTT.msgs."  # where the broker stores QoS 1/2 publishes before its PUBACK

RESERVED_USERS = frozenset({"admin", "ingress", "lane", "mqtt-probe", "default", "rules"})
"""Broker users of the platform itself: no device may take their name."""

# A topic level that maps onto exactly one NATS token: no separators, wildcards or blanks.
_TOKEN = re.compile(r"[A-Za-z0-9_:@-]{1,128}")
_USERNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
BCRYPT_HASH = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")


def is_password_hash(password: str) -> bool:
    """Whether ``password`` is already a bcrypt hash (stored as it is, never hashed again)."""
    return BCRYPT_HASH.fullmatch(password) is not None


def uplink_topic(data_source_id: str, asset_uuid: str) -> str:
    """The MQTT topic a device publishes its events to."""
    return f"{TOPIC_ROOT}/{data_source_id}/{asset_uuid}/up"


def uplink_subject(data_source_id: str, asset_uuid: str) -> str:
    """The NATS subject the broker maps :func:`uplink_topic` onto."""
    return uplink_topic(data_source_id, asset_uuid).replace("/", ".")


def parse_uplink(subject: str) -> tuple[str, str] | None:
    """``(dataSourceId, assetUUID)`` of an uplink subject (as published, or as the broker
    stored it), or None if it is not one."""
    if subject.startswith(_STORED_PREFIX):
        subject = subject[len(_STORED_PREFIX) :]
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != ["eventray", "mqtt"] or parts[4] != "up":
        return None
    return parts[2], parts[3]


def tracker_id_of(store_id: str, seq: int) -> str:
    """The eventTrackerId of the stored uplink ``seq``: the same every time it is delivered,
    so an uplink the bridge published but could not acknowledge before a crash is published
    again under the same id and the stream keeps it once. ``store_id`` names the broker's
    store (its creation time): a new store numbers from 1 again."""
    prefix = hashlib.blake2b(store_id.encode(), digest_size=8).hexdigest()
    return f"{prefix}{seq:016x}"


@dataclass(frozen=True, slots=True)
class MqttAccount:
    """A device's broker user: its name, password (a bcrypt hash, or plain text the broker
    configuration hashes), and the subjects it may publish to."""

    username: str
    password: str
    subjects: tuple[str, ...]
    asset_id: str


def _takes(source: DataSource, asset: Asset, catalog: Catalog) -> bool:
    if source.protocol != "mqtt":
        return False
    fixed = source.asset_bind.fixed_asset_id
    if fixed is not None and fixed != asset.id:
        return False
    return catalog.is_ancestor_or_self(source.org_id, asset.org_id)


def accounts(catalog: Catalog) -> list[MqttAccount]:
    """The broker users of every enabled MQTT asset, with the uplink subjects of every enabled
    ``mqtt`` data source that can take it. A disabled asset (or one no enabled data source
    takes) has no user: its connection is refused, and a connected one is closed."""
    out = []
    sources = [s for s in catalog.data_sources.values() if s.enabled and s.protocol == "mqtt"]
    for asset in catalog.assets.values():
        credentials = asset.protocol.mqtt if asset.protocol is not None else None
        if not asset.enabled or credentials is None or asset.protocol is None:
            continue
        if asset.protocol.type != "mqtt":
            continue
        subjects = tuple(
            uplink_subject(s.id, asset.asset_uuid) for s in sources if _takes(s, asset, catalog)
        )
        if subjects:
            out.append(MqttAccount(credentials.username, credentials.password, subjects, asset.id))
    return out


def mqtt_problems(catalog: Catalog) -> Iterator[tuple[DataSource | Asset, str, str]]:
    """What makes an MQTT configuration unable to work: ``(entity, field path, reason)``."""
    for source in catalog.data_sources.values():
        if source.protocol == "mqtt" and not _TOKEN.fullmatch(source.id):
            yield (
                source,
                "id",
                ("an mqtt data source's id is a topic level: 1-128 of letters, digits, _ : @ -"),
            )
    users: dict[str, str] = {}
    for asset in catalog.assets.values():
        protocol = asset.protocol
        if protocol is None or protocol.type != "mqtt":
            if protocol is not None and protocol.mqtt is not None:
                yield asset, "protocol.mqtt", "credentials given but protocol.type is not mqtt"
            continue
        credentials = protocol.mqtt
        if credentials is None:
            yield asset, "protocol.mqtt", "an mqtt asset needs {username, password}"
            continue
        if not _TOKEN.fullmatch(asset.asset_uuid):
            yield (
                asset,
                "assetUUID",
                ("an mqtt asset's assetUUID is a topic level: 1-128 of letters, digits, _ : @ -"),
            )
        name = credentials.username
        if not _USERNAME.fullmatch(name):
            yield (
                asset,
                "protocol.mqtt.username",
                ("1-128 of letters, digits, _ . : @ - (it is written into the broker's config)"),
            )
        elif name in RESERVED_USERS:
            yield asset, "protocol.mqtt.username", f"{name!r} is reserved for the platform"
        elif name in users:
            yield asset, "protocol.mqtt.username", f"username also used by asset {users[name]!r}"
        else:
            users[name] = asset.id
        password = credentials.password
        if not is_password_hash(password) and not 12 <= len(password) <= 72:
            yield (
                asset,
                "protocol.mqtt.password",
                ("12 to 72 characters (bcrypt's limit), or a bcrypt hash ($2b$...)"),
            )
        if not any(_takes(s, asset, catalog) for s in catalog.data_sources.values()):
            yield (
                asset,
                "protocol",
                (
                    "no mqtt data source of its organization or an ancestor can take this asset "
                    "(its uplinks would have nowhere to go)"
                ),
            )
