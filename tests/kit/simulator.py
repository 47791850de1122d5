"""A device simulator for the sample tenant: realistic, seeded, bounded traffic.

Freezers drift around -19 C with occasional defrost excursions above the -15 C alert
threshold and door openings; LoRaWAN EM300-TH probes post The Things Stack webhooks whose
payload is the real binary frame; the depot door contact (WS301) opens and closes. A small
share of traffic is deliberately bad (a probe reading 85 C, a body that is not an object) so
the error paths are exercised too.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from eventray.pipeline.catalog import Catalog
from eventray.testing.tenants import original_id

__all__ = ["DeviceSimulator", "Uplink"]


@dataclass(frozen=True, slots=True)
class Uplink:
    data_source_id: str
    body: bytes


def _em300_frame(temperature: float, humidity: float, battery: int) -> bytes:
    raw = round(temperature * 10) & 0xFFFF
    return bytes(
        [0x01, 0x75, battery, 0x03, 0x67, raw & 0xFF, raw >> 8, 0x04, 0x68, round(humidity * 2)]
    )


class DeviceSimulator:
    """Yields uplinks for every enabled asset of the sample templates, round-robin."""

    def __init__(self, catalog: Catalog, *, seed: int = 7, start: datetime | None = None,
                 step_s: float = 15.0, bad_ratio: float = 0.005) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.now = start or datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
        self.step = timedelta(seconds=step_s)
        self.bad_ratio = bad_ratio
        self.assets = [a for a in catalog.assets.values() if a.enabled]
        sources = list(catalog.data_sources.values())
        self.gateway = next((s.id for s in sources if s.id == "ds-gateway-http"), sources[0].id)
        self.ttn = next((s.id for s in sources if s.id == "ds-ttn-webhook"), sources[0].id)
        # Each device posts through a data source of its own tenant (copies of the sample
        # tenant have their own gateway and webhook sources): the nearest one of its kind.
        self.sources: dict[str, tuple[str, str]] = {}
        for asset in self.assets:
            mine = [s for s in sources if catalog.is_ancestor_or_self(s.org_id, asset.org_id)]
            gateway = next((s.id for s in mine if s.id.startswith("ds-gateway")), self.gateway)
            ttn = next((s.id for s in mine if s.id.startswith("ds-ttn")), self.ttn)
            self.sources[asset.id] = (gateway, ttn)
        self.temps = {a.id: -19.0 + self.rng.uniform(-1, 1) for a in self.assets}
        self.doors = {a.id: False for a in self.assets}
        self.seq = 0

    def _temperature(self, asset_id: str) -> float:
        t = self.temps[asset_id] + self.rng.gauss(0, 0.35)
        if self.rng.random() < 0.01:
            t += self.rng.uniform(4, 9)  # defrost cycle or a door left open
        t += (-19.0 - t) * 0.08  # the compressor pulls back to the set point
        self.temps[asset_id] = t
        return round(t, 1)

    def __iter__(self) -> Iterator[Uplink]:
        while True:
            for asset in self.assets:
                yield self._uplink(asset.id, asset.template_id, asset.asset_uuid)
            self.now += self.step

    def take(self, count: int) -> list[Uplink]:
        out: list[Uplink] = []
        for uplink in self:
            out.append(uplink)
            if len(out) == count:
                return out
        return out

    def _uplink(self, asset_id: str, template_id: str, uuid: str) -> Uplink:
        self.seq += 1
        gateway, ttn = self.sources[asset_id]
        ts = self.now.isoformat().replace("+00:00", "Z")
        if self.rng.random() < self.bad_ratio:
            bad = b"[1, 2, 3]" if self.rng.random() < 0.5 else orjson.dumps(
                {"deviceId": uuid, "ts": ts, "readings": {"t": 85.0}, "door": "closed"})  # fmt: skip
            return Uplink(gateway, bad)
        template_id = original_id(template_id)  # copied tenants send what the sample does
        if template_id == "em300-th":
            frame = _em300_frame(self._temperature(asset_id), 40 + self.rng.random() * 20, 90)
            body = {
                "end_device_ids": {"device_id": asset_id, "dev_eui": uuid},
                "correlation_ids": [f"as:up:{self.seq:012d}"],
                "received_at": ts,
                "uplink_message": {"f_port": 85, "frm_payload": base64.b64encode(frame).decode()},
            }
            return Uplink(ttn, orjson.dumps(body))
        if template_id == "ws301-door":
            if self.rng.random() < 0.05:
                self.doors[asset_id] = not self.doors[asset_id]
            frame = bytes([0x01, 0x75, 95, 0x03, 0x00, 1 if self.doors[asset_id] else 0])
            body = {
                "end_device_ids": {"device_id": asset_id, "dev_eui": uuid},
                "received_at": ts,
                "uplink_message": {"f_port": 85, "frm_payload": base64.b64encode(frame).decode()},
            }
            return Uplink(ttn, orjson.dumps(body))
        door = self.doors[asset_id]
        if self.rng.random() < (0.3 if door else 0.01):
            door = self.doors[asset_id] = not door
        reading: dict[str, object] = {"deviceId": uuid, "ts": ts, "door": "open" if door else "closed",
                   "batt": 80 - self.seq % 7}  # fmt: skip
        if self.rng.random() < 0.1:  # older firmware reports Fahrenheit
            reading["temp_f"] = round(self._temperature(asset_id) * 9 / 5 + 32, 1)
        else:
            reading["readings"] = {
                "t": self._temperature(asset_id),
                "rh": round(55 + self.rng.random() * 10),
            }
        return Uplink(gateway, orjson.dumps(reading))
