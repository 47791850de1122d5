"""What the MongoDB stores (config, tokens, secrets) share: opening a client with the store's
timeout, naming the server without its credentials, one error type per retry decision, and the
revision counters kept in the ``meta`` collection.

One place decides how long a store waits for a server and which failures are worth a retry, so
the three stores cannot drift apart on either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, WTimeoutError

from eventray.pipeline.errors import PermanentError, RetryableError

__all__ = [
    "Document",
    "MongoRefusedError",
    "MongoUnavailableError",
    "Opened",
    "bump",
    "counter",
    "mongo_error",
    "open_client",
    "redacted",
]

Document = dict[str, Any]

_RETRYABLE_LABELS: Final = ("RetryableWriteError", "TransientTransactionError")
_CREDENTIALS = re.compile(r"(//[^:/@]*):[^@/]*@")


class MongoUnavailableError(RetryableError):
    """MongoDB could not be reached or timed out; the same call may succeed later."""


class MongoRefusedError(PermanentError):
    """MongoDB refused the operation (authorisation, invalid document, bad URL)."""


def redacted(text: str) -> str:
    """``text`` with any ``user:password@`` of a connection string masked."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def mongo_error(where: str, operation: str, exc: PyMongoError) -> RetryableError | PermanentError:
    """The project's error for a failed ``operation``: retryable when the server was
    unreachable, timed out or labelled the error transient; permanent otherwise."""
    retryable = isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError) or any(
        exc.has_error_label(label) for label in _RETRYABLE_LABELS
    )
    what = "is unreachable or timed out" if retryable else "refused it"
    message = redacted(f"{operation} failed: {where} {what}: {type(exc).__name__}: {exc}")
    return MongoUnavailableError(message) if retryable else MongoRefusedError(message)


@dataclass(frozen=True, slots=True)
class Opened:
    """A store's client: ``owned`` when the store made it (and so closes it); ``where`` names
    the server in messages, without credentials."""

    client: MongoClient[Document]
    owned: bool
    where: str


def open_client(
    url: str | None, client: MongoClient[Document] | None, *, database: str, timeout_s: float,
    operation: str,
) -> Opened:  # fmt: skip
    """The given ``client``, or one made for ``url`` that waits at most ``timeout_s`` for a
    server on every operation.

    Raises:
        ValueError: neither or both of ``url`` and ``client``.
        MongoUnavailableError, MongoRefusedError: the URL cannot be used (``operation``).
    """
    if (url is None) == (client is None):
        raise ValueError("give exactly one of url= or client=")
    if client is not None:
        return Opened(client, False, f"MongoDB database {database!r}")
    assert url is not None
    where = f"MongoDB at {redacted(url)}"
    timeout_ms = max(1, round(timeout_s * 1000))
    try:
        made: MongoClient[Document] = MongoClient(
            url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
        )  # fmt: skip
    except PyMongoError as exc:
        raise mongo_error(where, operation, exc) from exc
    return Opened(made, True, where)


def bump(meta: Collection[Document], name: str, by: int) -> int:
    """Add ``by`` to the counter ``name`` and return its new value: one atomic
    ``find_one_and_update``, so the server serialises concurrent writers."""
    updated = meta.find_one_and_update(
        {"_id": name}, {"$inc": {"value": by}}, upsert=True,
        return_document=ReturnDocument.AFTER,
    )  # fmt: skip
    assert updated is not None  # upsert + AFTER always returns the document
    return int(updated["value"])


def counter(meta: Collection[Document], name: str) -> int:
    """The counter's value (0 before its first bump). PyMongoError passes through."""
    found = meta.find_one({"_id": name})
    return int(found["value"]) if found is not None else 0
