"""Settings that would start an embedded server this install lacks are refused before anything
starts, naming the extra that brings it and the setting that replaces it."""

from __future__ import annotations

import pytest

from eventray.cluster.embedded import (
    CHDB,
    EMBEDDED_INSTALL,
    NATS,
    VALKEY,
    EmbeddedPart,
    check_embedded,
    installed,
    needed_parts,
)
from eventray.config.settings import Settings
from eventray.pipeline.errors import SettingsError

REAL = {
    "nats": {"url": "nats://nats.example:4222"},
    "redis_url": "redis://valkey.example:6379/0",
    "store": {"clickhouse_url": "http://clickhouse.example:8123"},
}


def test_embedded_defaults_need_every_embedded_server() -> None:
    assert needed_parts(Settings()) == [NATS, VALKEY, CHDB]


def test_real_servers_need_nothing_embedded() -> None:
    settings = Settings(**REAL)  # type: ignore[arg-type]
    assert needed_parts(settings) == []
    check_embedded(settings, present=lambda part: False)  # a client-only install is enough


def test_a_missing_part_is_named_with_the_extra_and_its_setting() -> None:
    def present(part: EmbeddedPart) -> bool:
        return part is not CHDB

    with pytest.raises(SettingsError) as refused:
        check_embedded(Settings(nats={"url": "nats://n:4222"}), present=present)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "pip install 'eventray[embedded]'" in message and EMBEDDED_INSTALL in message
    assert "chDB" in message and "EVENTRAY_STORE__CLICKHOUSE_URL" in message
    assert "EVENTRAY_NATS__URL" not in message  # named a real server: not asked for
    assert "EVENTRAY_REDIS_URL" not in message  # present


def test_every_missing_part_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        check_embedded(Settings(), present=lambda part: False)
    for variable in ("EVENTRAY_NATS__URL", "EVENTRAY_REDIS_URL", "EVENTRAY_STORE__CLICKHOUSE_URL"):
        assert variable in str(refused.value)


def test_this_dev_install_has_every_embedded_part() -> None:
    # `make install` installs .[dev], which includes the embedded extra.
    assert all(installed(part) for part in (NATS, VALKEY, CHDB))
