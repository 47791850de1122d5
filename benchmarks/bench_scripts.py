"""Template execution in QuickJS, batched, against the same logic in plain Python.

Workloads: a trivial transform; the EM300-TH LoRaWAN codec (unmodified, from the TTN device
repository) as decode stage + transform; the sample tenant's 3-stage freezer template with the
``$mv`` validator, in this thread and through the crash-isolated script host (the pipeline's
default; the difference is the host's cost per event). Batches of 1,000 events, one core (the
host's parent waits while its child runs).

Targets (events/s asked of the QuickJS rows): freezer 50,000, EM300-TH 60,000, trivial 100,000.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import Result, measure_pair, print_table
from eventray.pipeline.catalog import load_catalog
from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.bundle import bundle_for_template
from eventray.pipeline.scripts.host import HostedRunner, ScriptHost
from eventray.pipeline.scripts.runner import ScriptRunner

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000


def trivial() -> list[Result]:
    template = AssetTemplate(
        id="bench-trivial",
        orgId="o",
        name="trivial",
        scriptConversion=(
            "result = { eventType: 'telemetry', eventId: payload.id, "
            "data: { t: payload.temperature, h: payload.humidity }, created: payload.ts };"
        ),
    )
    bodies = [
        orjson.dumps(
            {
                "id": f"e{i}",
                "temperature": -18 + i % 7,
                "humidity": 40 + i % 20,
                "ts": "2026-03-01T08:00:00Z",
            }
        )
        for i in range(BATCH)
    ]
    runner = ScriptRunner(bundle_for_template(template))

    def quickjs_batch() -> int:
        return len(runner.run_raw(bodies))

    def python_batch() -> int:
        out = []
        for raw in bodies:
            p = orjson.loads(raw)
            out.append(
                {
                    "eventType": "telemetry",
                    "eventId": p["id"],
                    "data": {"t": p["temperature"], "h": p["humidity"]},
                    "created": p["ts"],
                }
            )
        return len(out)

    subject, baseline = measure_pair(
        ("trivial transform, QuickJS batch", quickjs_batch),
        ("trivial transform, plain Python (baseline)", python_batch),
    )
    return [subject.with_target(100_000), baseline]


def _em300_python(data: list[int]) -> dict[str, Any]:
    """Plain-Python port of the EM300-TH codec's channel loop (the baseline)."""
    decoded: dict[str, Any] = {}
    i = 0
    while i < len(data):
        channel, kind = data[i], data[i + 1]
        i += 2
        if channel == 0x01 and kind == 0x75:
            decoded["battery"] = data[i]
            i += 1
        elif channel == 0x03 and kind == 0x67:
            raw = data[i] | data[i + 1] << 8
            decoded["temperature"] = (raw - 0x10000 if raw > 0x7FFF else raw) / 10
            i += 2
        elif channel == 0x04 and kind == 0x68:
            decoded["humidity"] = data[i] / 2
            i += 1
        else:
            break
    return decoded


def codec() -> list[Result]:
    source = (ROOT / "config/samples/codecs/milesight-em300-th.js").read_text()
    template = AssetTemplate(
        id="bench-codec",
        orgId="o",
        name="codec",
        scriptProcessor=source,
        scriptConversion=(
            "result = { eventType: 'temperature', eventId: payload.uplink.id, data: payload.data,"
            " created: payload.recvTime };"
        ),
    )
    frames = [
        [
            0x01,
            0x75,
            50 + i % 50,
            0x03,
            0x67,
            (-200 + i % 40) & 0xFF,
            ((-200 + i % 40) >> 8) & 0xFF,
            0x04,
            0x68,
            90,
        ]
        for i in range(BATCH)
    ]
    bodies = [
        orjson.dumps(
            {
                "id": f"up{i}",
                "received_at": "2026-03-01T08:00:00Z",
                "uplink_message": {
                    "f_port": 85,
                    "frm_payload": base64.b64encode(bytes(f)).decode(),
                },
            }
        )
        for i, f in enumerate(frames)
    ]
    runner = ScriptRunner(bundle_for_template(template))
    assert "r" in runner.run_raw(bodies[:1])[0], runner.run_raw(bodies[:1])

    def quickjs_batch() -> int:
        return len(runner.run_raw(bodies))

    def python_batch() -> int:
        out = []
        for raw in bodies:
            p = orjson.loads(raw)
            data = list(base64.b64decode(p["uplink_message"]["frm_payload"]))
            out.append(
                {
                    "eventType": "temperature",
                    "eventId": p["id"],
                    "data": _em300_python(data),
                    "created": p["received_at"],
                }
            )
        return len(out)

    subject, baseline = measure_pair(
        ("EM300-TH codec + transform, QuickJS batch", quickjs_batch),
        ("EM300-TH decoder ported to Python (baseline)", python_batch),
    )
    return [subject.with_target(60_000), baseline]


def freezer() -> list[Result]:
    catalog = load_catalog([ROOT / "config/samples/tenant"], compile_scripts=False)
    bundle = bundle_for_template(catalog.templates["freezer-json"])
    runner = ScriptRunner(bundle)
    bodies = [
        orjson.dumps(
            {
                "deviceId": f"FRZ-{i % 50:04d}",
                "ts": "2026-03-01T08:00:00Z",
                "readings": {"t": -20 + (i % 9), "rh": 60},
                "door": "closed",
                "batt": 80,
            }
        )
        for i in range(BATCH)
    ]
    assert "r" in runner.run_raw(bodies[:1])[0]
    host = ScriptHost()
    try:
        hosted = HostedRunner(host, bundle.key, bundle)
        assert hosted.run_raw(bodies) == runner.run_raw(bodies)
        in_thread, via_host = measure_pair(
            (
                "freezer template (decode+$mv validate+transform)",
                lambda: len(runner.run_raw(bodies)),
            ),
            ("freezer template, through the script host", lambda: len(hosted.run_raw(bodies))),
        )
    finally:
        host.close()
    return [in_thread.with_target(50_000), via_host]


def main() -> None:
    print_table("Scripts (QuickJS, batches of 1,000, one core)", trivial() + codec() + freezer())


if __name__ == "__main__":
    main()
