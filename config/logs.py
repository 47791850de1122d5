"""How eventray's processes log: one JSON object a line (or plain text), set up once per process.

Every actor (through :class:`eventray.actors.host.ActorHost`) and the CLI driver call
:func:`configure_logging` with the ``log`` settings. Ray writes an actor's stderr to
``/tmp/ray/session_*/logs/worker-*.err``, which the Ray dashboard shows as the actor's logs, so
a JSON line there can be searched and shipped (Loki, Elasticsearch) without parsing prose.

Modules log through ``logging.getLogger(__name__)`` and put what a line is about in ``extra``:
``eventTrackerId``, ``org``, ``stage``, ``partition`` (and anything else) become fields of the
JSON object. The stdlib is enough for this; no formatter dependency.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

__all__ = ["EVENT_FIELDS", "JsonFormatter", "configure_logging"]

EVENT_FIELDS = ("eventTrackerId", "org", "stage", "partition")
"""The fields a line about an event carries (given through ``extra``)."""

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_HANDLER_NAME = "eventray"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``,
    ``logger``, ``msg``, the process's ``component`` (``lane-0``, ``ingress``, ``driver``),
    every ``extra`` field, and ``exc`` with the traceback when there is one."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "component": self.component,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(
    *,
    component: str,
    fmt: Literal["json", "text"] = "json",
    level: str = "INFO",
    propagate: bool = True,
) -> None:
    """Send the ``eventray`` loggers' records to stderr as ``fmt``, from ``level`` up.

    ``propagate=False`` (the actors) keeps the records from the root logger too, where a
    handler someone else installed would print each line a second time, in another format;
    the driver keeps propagating, so an embedding application (or pytest) still sees them.

    Idempotent (a restarted actor's ``__init__`` and every CLI call may run it again): the
    handler it installed before is replaced, never doubled. Only the ``eventray`` logger tree
    is touched: Ray's and the libraries' own logging stays as they set it.
    """
    root = logging.getLogger("eventray")
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = propagate
