"""MongoDB ConfigStore: the production source of truth for entities.

Why it is shaped this way:

- **One document per entity, keyed ``"{kind}/{id}"``.** Upserts by (kind, id) become a
  ``ReplaceOne`` on ``_id``, and a whole put is one ``bulk_write`` round trip.
- **The revision is a counter document** in ``meta``, bumped with ``$inc`` through
  ``find_one_and_update``: the server serialises concurrent writers, so no change is ever
  counted twice or lost. It is bumped *after* the entities are written: a reader that sees
  revision N is sure to find N's documents. A failure between the two leaves the change
  uncounted until the next one; retrying the put (idempotent) counts it.
- **Documents keep the position of their first put** (a ``_seq`` field, allocated from a second
  counter and stripped on read). Organizations without a pinned ``code`` get their pathKey from
  their position among siblings, and MongoDB promises no natural order, so without it a reload
  could renumber organizations whose stored rows keep the old pathKey.
- **Errors carry the retry decision.** An unreachable or timed-out server is
  :class:`MongoUnavailableError` (retryable); anything the server refuses (authorisation, a
  document too large) is :class:`MongoRefusedError` (permanent).

This is the only module that imports pymongo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pymongo import MongoClient, ReplaceOne, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    WTimeoutError,
)

from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.loader import checked_documents
from eventray.pipeline.ports import ConfigStore

__all__ = ["MongoConfigStore", "MongoRefusedError", "MongoUnavailableError"]

_REVISION: Final = "revision"
_SEQUENCE: Final = "sequence"
_RESERVED: Final = ("_id", "_seq")
_RETRYABLE_LABELS: Final = ("RetryableWriteError", "TransientTransactionError")
# ``user:password@`` in a connection string; host lists (``h1,h2``) defeat urlsplit's port.
_CREDENTIALS = re.compile(r"(//[^:/@]*):[^@/]*@")

Document = dict[str, Any]


class MongoUnavailableError(RetryableError):
    """MongoDB could not be reached or timed out; the same call may succeed later."""


class MongoRefusedError(PermanentError):
    """MongoDB refused the operation (authorisation, invalid document, bad URL)."""


def _redacted(text: str) -> str:
    return _CREDENTIALS.sub(r"\1:***@", text)


def _checked(documents: Sequence[Mapping[str, Any]]) -> list[tuple[str, Document]]:
    """Each document keyed ``"{kind}/{id}"``, later duplicates winning at the first position.

    Values must be JSON's: BSON would take a YAML date and hand back a naive datetime, so the
    same document would read back differently here and in the embedded store.
    """
    out: dict[str, Document] = {}
    for kind, entity_id, copy in checked_documents(documents, reserved=_RESERVED):
        out[f"{kind}/{entity_id}"] = copy
    return list(out.items())


class MongoConfigStore(ConfigStore):
    """Entities in the ``entities`` collection, the revision in ``meta``.

    Args:
        url: a ``mongodb://`` or ``mongodb+srv://`` connection string; the store creates (and
            closes) its own client.
        client: an existing pymongo ``MongoClient`` (or a pymongo-compatible one such as
            ``mongomock.MongoClient``); the caller keeps ownership and closes it.
        database: the database that holds both collections.
        timeout_s: how long one operation may wait for a server (selection, connect, socket)
            before it fails as :class:`MongoUnavailableError`, instead of blocking an actor.

    Exactly one of ``url`` and ``client`` must be given.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: MongoClient[Document] | None = None,
        database: str = "eventray",
        timeout_s: float = 5.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give exactly one of url= or client=")
        self._owned = client is None
        if client is None:
            assert url is not None
            self._where = f"MongoDB at {_redacted(url)}"
            timeout_ms = max(1, round(timeout_s * 1000))
            try:
                client = MongoClient(
                    url,
                    serverSelectionTimeoutMS=timeout_ms,
                    connectTimeoutMS=timeout_ms,
                    socketTimeoutMS=timeout_ms,
                )
            except PyMongoError as exc:
                raise self._error("connect", exc) from exc
        else:
            self._where = f"MongoDB database {database!r}"
        self._client: MongoClient[Document] = client
        db = client[database]
        self._entities: Collection[Document] = db["entities"]
        self._meta: Collection[Document] = db["meta"]
        self._closed = False

    def put(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Upsert ``documents`` by (kind, id) in one bulk write; returns the new revision.

        A replaced document keeps its position; new ones are appended in the given order. An
        empty batch changes nothing and returns the current revision.

        Raises:
            ConfigError: a document lacks a string ``kind`` or ``id``, uses a reserved field
                (``_id``, ``_seq``) or holds a value JSON cannot carry; nothing was stored.
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the write.
        """
        checked = _checked(documents)
        if not checked:
            return self.revision()
        try:
            keys = [key for key, _ in checked]
            seqs = {
                found["_id"]: found["_seq"]
                for found in self._entities.find({"_id": {"$in": keys}}, {"_seq": 1})
            }
            new = [key for key in keys if key not in seqs]
            if new:
                last = self._bump(_SEQUENCE, len(new))
                seqs.update(zip(new, range(last - len(new) + 1, last + 1), strict=True))
            self._entities.bulk_write(
                [
                    ReplaceOne({"_id": key}, {"_id": key, **doc, "_seq": seqs[key]}, upsert=True)
                    for key, doc in checked
                ],
                ordered=True,
            )
            return self._bump(_REVISION, 1)
        except PyMongoError as exc:
            raise self._error("put", exc) from exc

    def delete(self, kind: str, entity_id: str) -> int:
        """Remove one entity; returns the new revision, unchanged if there was no such entity.

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the delete.
        """
        try:
            if self._entities.delete_one({"_id": f"{kind}/{entity_id}"}).deleted_count == 0:
                return self.revision()
            return self._bump(_REVISION, 1)
        except PyMongoError as exc:
            raise self._error("delete", exc) from exc

    def documents(self) -> list[Document]:
        """Every stored document, as it was put, in the order of first put.

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the query.
        """
        try:
            found = list(self._entities.find({}))
        except PyMongoError as exc:
            raise self._error("read documents", exc) from exc
        # Sorted here rather than by the server: whole documents are fetched anyway, and a
        # server-side sort without an index is capped in memory.
        found.sort(key=lambda doc: (doc.get("_seq", 0), str(doc["_id"])))
        return [{k: v for k, v in doc.items() if k not in _RESERVED} for doc in found]

    def revision(self) -> int:
        """The number of changes ever counted in this database (0 for a new one).

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the query.
        """
        try:
            found = self._meta.find_one({"_id": _REVISION})
        except PyMongoError as exc:
            raise self._error("read revision", exc) from exc
        return int(found["value"]) if found is not None else 0

    def close(self) -> None:
        """Close the client if this store created it (idempotent); a given client is left open."""
        if self._owned and not self._closed:
            self._client.close()
        self._closed = True

    def _bump(self, counter: str, by: int) -> int:
        updated = self._meta.find_one_and_update(
            {"_id": counter},
            {"$inc": {"value": by}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert updated is not None  # upsert + AFTER always returns the document
        return int(updated["value"])

    def _error(self, operation: str, exc: PyMongoError) -> RetryableError | PermanentError:
        retryable = isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError) or any(
            exc.has_error_label(label) for label in _RETRYABLE_LABELS
        )
        what = "is unreachable or timed out" if retryable else "refused it"
        message = _redacted(
            f"config store {operation} failed: {self._where} {what}: {type(exc).__name__}: {exc}"
        )
        return MongoUnavailableError(message) if retryable else MongoRefusedError(message)
