"""Real device codecs from public repositories run unmodified, with their own examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventray.pipeline.models import AssetTemplate
from eventray.pipeline.scripts.bundle import bundle_for_script, bundle_for_template, detect_codec
from eventray.pipeline.scripts.runner import ScriptRunner

CODECS = Path(__file__).resolve().parents[2] / "config" / "samples" / "codecs"


def _examples() -> list[Any]:
    cases = []
    for path in sorted(CODECS.glob("*.examples.json")):
        codec = path.with_name(path.name.replace(".examples.json", ".js"))
        for example in json.loads(path.read_text()):
            cases.append(pytest.param(codec, example, id=f"{codec.stem}:{example['description']}"))
    return cases


@pytest.mark.parametrize(("codec", "example"), _examples())
def test_codec_matches_repository_example(codec: Path, example: dict[str, Any]) -> None:
    source = codec.read_text()  # unmodified file from the device repository
    runner = ScriptRunner(bundle_for_script(source))
    [out] = runner.run([{"fPort": example["fPort"], "bytes": example["bytes"]}])
    assert "e" not in out, out
    if example.get("expected_errors"):
        assert out["r"]["errors"] == example["expected_errors"]
    else:
        assert out["r"]["data"] == example["expected"]


def test_codec_styles_are_detected() -> None:
    assert detect_codec((CODECS / "milesight-em300-th.js").read_text()) == "decodeUplink"
    assert detect_codec((CODECS / "milesight-em300-th-ttn-v2.js").read_text()) == "Decoder"
    assert detect_codec((CODECS / "milesight-em300-th-chirpstack-v3.js").read_text()) == "Decode"
    assert detect_codec("result = payload;") is None
    assert detect_codec("const decodeUplink = (input) => ({data: {}});") == "decodeUplink"


def test_each_uplink_sees_fresh_codec_globals() -> None:
    source = """
    var calls = 0;
    function decodeUplink(input) {
      calls += 1;
      leaked = (typeof leaked === "undefined" ? 0 : leaked) + 1;  // implicit global
      globalThis.explicit = (globalThis.explicit || 0) + 1;
      return { data: { calls: calls, leaked: leaked, explicit: globalThis.explicit } };
    }
    """
    runner = ScriptRunner(bundle_for_script(source))
    outs = runner.run([{"fPort": 1, "bytes": [1]}] * 3)
    assert [o["r"]["data"] for o in outs] == [{"calls": 1, "leaked": 1, "explicit": 1}] * 3
    # and across batches too
    assert runner.run([{"fPort": 1, "bytes": [1]}])[0]["r"]["data"]["calls"] == 1


def test_es2015_plus_codec_runs() -> None:
    source = """
    class Reader { constructor(b) { this.b = b; this.i = 0; }
      u16() { const v = (this.b[this.i] << 8) | this.b[this.i + 1]; this.i += 2; return v; } }
    const decodeUplink = ({ bytes, fPort }) => {
      const r = new Reader(bytes);
      const [t, h] = [r.u16() / 10, r.u16()];
      const extra = { ...{ port: fPort } };
      return { data: { t, h, label: `p${extra.port}`, opt: extra?.missing?.x ?? "none",
               big: (2n ** 64n).toString() } };
    };
    """
    [out] = ScriptRunner(bundle_for_script(source)).run([{"fPort": 7, "bytes": [0, 215, 0, 55]}])
    assert out["r"]["data"] == {
        "t": 21.5,
        "h": 55,
        "label": "p7",
        "opt": "none",
        "big": "18446744073709551616",
    }


def _codec_template(source: str) -> AssetTemplate:
    return AssetTemplate(
        id="tpl-codec",
        orgId="acme",
        name="codec template",
        scriptProcessor=source,
        scriptConversion=(
            "result = { eventType: 'telemetry', eventId: payload.uplink.id,"
            " data: payload.data, metadata: { fPort: payload.fPort }, created: payload.recvTime };"
        ),
    )


def test_codec_as_template_decode_stage_reads_tts_webhook() -> None:
    template = _codec_template((CODECS / "milesight-em300-th.js").read_text())
    runner = ScriptRunner(bundle_for_template(template))
    body = {  # The Things Stack uplink webhook: frm_payload is base64 of 03 67 38 FF
        "id": "up-1",
        "received_at": "2026-03-01T10:00:00Z",
        "uplink_message": {"f_port": 85, "frm_payload": "A2c4/w=="},
    }
    [out] = runner.run([body])
    assert out["r"] == {
        "eventType": "telemetry",
        "eventId": "up-1",
        "data": {"temperature": -20.0},
        "metadata": {"fPort": 85},
        "created": "2026-03-01T10:00:00Z",  # recvTime as the network server sent it
    }


def test_codec_errors_fail_the_decode_stage_in_a_template() -> None:
    template = _codec_template((CODECS / "dragino-lht65.js").read_text())
    runner = ScriptRunner(bundle_for_template(template))
    bad_port, no_bytes = runner.run([{"id": "x", "fPort": 42, "bytes": [1, 2]}, {"id": "y"}])
    assert bad_port["e"]["stage"] == "decode"
    assert "unknown FPort" in bad_port["e"]["message"]
    assert no_bytes["e"] == {
        "stage": "decode",
        "message": "no uplink bytes in payload: expected bytes, uplink_message.frm_payload, "
        "data (base64) with fPort, or payloadHex",
    }
