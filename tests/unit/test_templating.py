"""``{{path}}`` placeholders (pipeline/templating.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from eventray.pipeline.errors import TemplateRenderError
from eventray.pipeline.paths import MISSING
from eventray.pipeline.ports import SecretsProvider
from eventray.pipeline.templating import compile_template, format_value, render


class DictSecrets:
    """A SecretsProvider over a dict (the port is one method)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def secret(self, name: str) -> str | None:
        self.asked.append(name)
        return self.values.get(name)


CONTEXT: dict[str, Any] = {
    "event": {
        "eventType": "temperature",
        "data": {
            "temperature": 80.0,
            "humidity": 41.5,
            "open": False,
            "tags": ["a", "b"],
            "nested": {"k": "v"},
            "nothing": None,
            "readings": [{"v": 7}],
        },
    },
    "state": {"counter": 3, "lastAlertAt": ""},
    "params": {"channel": "#ops"},
    "metadata": {"assetId": "freezer-1"},
}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (80.0, "80"),
        (-0.0, "0"),
        (80.5, "80.5"),
        (3, "3"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        (MISSING, ""),
        ("text", "text"),
        ({"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}'),
        (["x", 2], '["x",2]'),
        (datetime(2026, 1, 1, 1, 0, tzinfo=UTC), "2026-01-01T01:00:00.000Z"),
    ],
)
def test_format_value(value: Any, text: str) -> None:
    assert format_value(value) == text


def test_format_value_integral_floats_inside_json_like_javascript() -> None:
    assert format_value({"t": 80.0}) == '{"t":80}'


def test_render_every_root() -> None:
    text = (
        "{{event.eventType}} {{event.data.temperature}}C #{{state.counter}} "
        "to {{params.channel}} on {{metadata.assetId}}"
    )
    assert render(text, CONTEXT) == "temperature 80C #3 to #ops on freezer-1"


def test_render_values_paths_and_missing() -> None:
    assert render("{{ event.data.humidity }}%", CONTEXT) == "41.5%"
    assert render("{{event.data.open}}", CONTEXT) == "false"
    assert render("{{event.data.tags}}", CONTEXT) == '["a","b"]'
    assert render("{{event.data.nested}}", CONTEXT) == '{"k":"v"}'
    assert render("{{event.data.readings[0].v}}/{{event.data.readings.0.v}}", CONTEXT) == "7/7"
    assert render("[{{event.data.nothing}}]", CONTEXT) == "[]"
    assert render("[{{event.data.absent}}]", CONTEXT) == "[]"
    assert render("[{{state.lastAlertAt}}]", CONTEXT) == "[]"
    assert render("[{{metadata.assetId}}]", {}) == "[]"  # root missing from the context
    assert render("no placeholders", CONTEXT) == "no placeholders"
    assert render("{{state.counter}}{{state.counter}}", CONTEXT) == "33"


@pytest.mark.parametrize(
    "text",
    ["{{data.temperature}}", "{{env.HOME}}", "{{ eventx.a }}", "hi {{assetId}}"],
)
def test_unknown_roots_are_rejected(text: str) -> None:
    with pytest.raises(TemplateRenderError, match="must start with one of"):
        compile_template(text)
    with pytest.raises(TemplateRenderError):
        render(text, CONTEXT)


def test_malformed_placeholders_are_rejected() -> None:
    with pytest.raises(TemplateRenderError, match="unbalanced"):
        compile_template("oops {{event.data")
    with pytest.raises(TemplateRenderError, match="invalid path"):
        compile_template("{{event..data}}")


def test_secrets_stay_unrendered_without_a_provider() -> None:
    text = "Bearer {{secrets.OPS_TOKEN}} for {{metadata.assetId}}"
    assert render(text, CONTEXT) == "Bearer {{secrets.OPS_TOKEN}} for freezer-1"
    assert render("{{ secrets.OPS_TOKEN }}", CONTEXT) == "{{ secrets.OPS_TOKEN }}"


def test_secrets_are_resolved_with_a_provider() -> None:
    secrets = DictSecrets({"OPS_TOKEN": "s3cr3t", "USER": "bot"})
    assert isinstance(secrets, SecretsProvider)
    text = "Bearer {{secrets.OPS_TOKEN}} as {{ secrets.USER }} for {{metadata.assetId}}"
    assert render(text, CONTEXT, secrets) == "Bearer s3cr3t as bot for freezer-1"
    assert secrets.asked == ["OPS_TOKEN", "USER"]


def test_unknown_secret_raises() -> None:
    secrets = DictSecrets({"OPS_TOKEN": "s3cr3t"})
    with pytest.raises(TemplateRenderError, match="unknown secret 'MISSING_ONE'"):
        render("{{secrets.MISSING_ONE}}", CONTEXT, secrets)


def test_secrets_in_the_context_are_not_a_secret_source() -> None:
    # a "secrets" key smuggled into the context is never read: only the provider counts
    context = {**CONTEXT, "secrets": {"OPS_TOKEN": "leaked"}}
    assert render("{{secrets.OPS_TOKEN}}", context) == "{{secrets.OPS_TOKEN}}"
    with pytest.raises(TemplateRenderError):
        render("{{secrets.OPS_TOKEN}}", context, DictSecrets({}))
