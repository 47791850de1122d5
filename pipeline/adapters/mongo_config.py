"""MongoDB ConfigStore (the production source of truth for entities) and TokenStore.

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
- **History beside the entities.** Each change of an entity is a document of ``history``
  keyed ``"{kind}/{id}/{revision}"`` and each entity's revision a document of ``revisions``
  (kept after a delete, so numbering goes on). A write stores its history records first, then
  the entities, then the revisions, then bumps the store revision; history is read up to the
  entity's published revision, so records of a write that failed half way are never shown,
  and the retried write replaces them (same keys). Without transactions the ``expected``
  check and the write are two operations: two writers racing on one entity can both pass it.
  The management API serialises its own writes, so this matters only between several API
  processes on one database.
- **Errors carry the retry decision.** An unreachable or timed-out server is
  :class:`MongoUnavailableError` (retryable); anything the server refuses (authorisation, a
  document too large) is :class:`MongoRefusedError` (permanent).

This module, ``mongo_secrets`` (the secret store) and ``mongo_client`` (what they share) are
the only ones that import pymongo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from pymongo import MongoClient, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from eventray.pipeline.adapters.mongo_client import (
    Document,
    MongoRefusedError,
    MongoUnavailableError,
    bump,
    counter,
    mongo_error,
    open_client,
)
from eventray.pipeline.clock import SystemClock
from eventray.pipeline.config_changes import (
    change_from_json,
    change_to_json,
    plan_delete,
    plan_put,
)
from eventray.pipeline.errors import PermanentError, RetryableError
from eventray.pipeline.loader import checked_documents
from eventray.pipeline.management.tokens import record_from_json, record_to_json
from eventray.pipeline.ports import (
    LOCAL_ADMIN,
    Author,
    Clock,
    ConfigStore,
    EntityChange,
    TokenRecord,
    TokenStore,
)

__all__ = ["MongoConfigStore", "MongoRefusedError", "MongoTokenStore", "MongoUnavailableError"]

_REVISION: Final = "revision"
_SEQUENCE: Final = "sequence"
_RESERVED: Final = ("_id", "_seq")
# ``user:password@`` in a connection string; host lists (``h1,h2``) defeat urlsplit's port.


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
        clock: when changes are recorded as made.

    Exactly one of ``url`` and ``client`` must be given.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: MongoClient[Document] | None = None,
        database: str = "eventray",
        timeout_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        opened = open_client(url, client, database=database, timeout_s=timeout_s,
                             operation="config store connect")  # fmt: skip
        self._owned, self._where, client = opened.owned, opened.where, opened.client
        self._client: MongoClient[Document] = client
        db = client[database]
        self._entities: Collection[Document] = db["entities"]
        self._meta: Collection[Document] = db["meta"]
        self._history: Collection[Document] = db["history"]
        self._revisions: Collection[Document] = db["revisions"]
        self._clock = clock or SystemClock()
        self._closed = False

    def put(
        self,
        documents: Sequence[Mapping[str, Any]],
        *,
        author: Author = LOCAL_ADMIN,
        expected: Mapping[tuple[str, str], int] | None = None,
        note: str = "",
    ) -> int:
        """Upsert ``documents`` by (kind, id) in one bulk write; returns the new revision.

        A replaced document keeps its position; new ones are appended in the given order. An
        empty batch changes nothing and returns the current revision.

        Raises:
            ConfigError: a document lacks a string ``kind`` or ``id``, uses a reserved field
                (``_id``, ``_seq``) or holds a value JSON cannot carry; nothing was stored.
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the write.
            RevisionConflictError: ``expected`` does not hold; nothing was stored.
        """
        checked = _checked(documents)
        if not checked:
            return self.revision()
        try:
            keys = [key for key, _ in checked]
            found_docs = list(self._entities.find({"_id": {"$in": keys}}))
            seqs = {found["_id"]: found["_seq"] for found in found_docs}
            current = {_split(str(d["_id"])): _stripped(d) for d in found_docs}
            planned = plan_put(
                current, self._entity_revisions(keys),
                [(_split(key), doc) for key, doc in checked], author=author,
                at=self._clock.now(), store_revision=self.revision() + 1, expected=expected,
                note=note,
            )  # fmt: skip
            self._record(planned.changes)
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
            self._publish(planned.revisions)
            return self._bump(_REVISION, 1)
        except PyMongoError as exc:
            raise self._error("put", exc) from exc

    def delete(
        self,
        kind: str,
        entity_id: str,
        *,
        author: Author = LOCAL_ADMIN,
        expected: int | None = None,
        note: str = "",
    ) -> int:
        """Remove one entity; returns the new revision, unchanged if there was no such entity.

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the delete.
            RevisionConflictError: ``expected`` does not hold; nothing was removed.
        """
        key = f"{kind}/{entity_id}"
        try:
            found = self._entities.find_one({"_id": key})
            current = {} if found is None else {(kind, entity_id): _stripped(found)}
            planned = plan_delete(
                current, self._entity_revisions([key]), (kind, entity_id), author=author,
                at=self._clock.now(), store_revision=self.revision() + 1, expected=expected,
                note=note,
            )  # fmt: skip
            if not planned.changes:
                return self.revision()
            self._record(planned.changes)
            if self._entities.delete_one({"_id": key}).deleted_count == 0:
                return self.revision()
            self._publish(planned.revisions)
            return self._bump(_REVISION, 1)
        except PyMongoError as exc:
            raise self._error("delete", exc) from exc

    def entity_revisions(self) -> dict[tuple[str, str], int]:
        """Each stored entity's revision (0 for one stored before revisions were kept).

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the query.
        """
        try:
            keys = [str(d["_id"]) for d in self._entities.find({}, {"_id": 1})]
            known = self._entity_revisions(keys)
        except PyMongoError as exc:
            raise self._error("read revisions", exc) from exc
        return {_split(key): known.get(_split(key), 0) for key in keys}

    def snapshot(self) -> tuple[int, list[Document], dict[tuple[str, str], int]]:
        """Read until the revision is the same before and after (a writer in between makes
        the reads of two revisions; a few tries, then the last read is returned).

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused a query.
        """
        for _ in range(5):
            revision = self.revision()
            documents = self.documents()
            revisions = self.entity_revisions()
            if self.revision() == revision:
                break
        return revision, documents, revisions

    def history(self, kind: str, entity_id: str) -> list[EntityChange]:
        """The recorded changes of one entity, oldest first, up to its published revision.

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the query.
        """
        try:
            published = self._entity_revisions([f"{kind}/{entity_id}"]).get((kind, entity_id), 0)
            found = list(
                self._history.find({"kind": kind, "id": entity_id, "revision": {"$lte": published}})
            )
        except PyMongoError as exc:
            raise self._error("read history", exc) from exc
        found.sort(key=lambda record: int(record["revision"]))
        return [change_from_json(record) for record in found]

    def _entity_revisions(self, keys: Sequence[str]) -> dict[tuple[str, str], int]:
        return {
            _split(str(found["_id"])): int(found["value"])
            for found in self._revisions.find({"_id": {"$in": list(keys)}})
        }

    def _record(self, changes: Sequence[EntityChange]) -> None:
        if changes:
            self._history.bulk_write(
                [
                    ReplaceOne(
                        {"_id": f"{c.kind}/{c.entity_id}/{c.revision}"},
                        {"_id": f"{c.kind}/{c.entity_id}/{c.revision}", **change_to_json(c)},
                        upsert=True,
                    )
                    for c in changes
                ],
                ordered=True,
            )

    def _publish(self, revisions: Mapping[tuple[str, str], int]) -> None:
        if revisions:
            self._revisions.bulk_write(
                [
                    ReplaceOne(
                        {"_id": f"{kind}/{entity_id}"},
                        {"_id": f"{kind}/{entity_id}", "value": n},
                        upsert=True,
                    )
                    for (kind, entity_id), n in revisions.items()
                ],
                ordered=True,
            )

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
        return [_stripped(doc) for doc in found]

    def revision(self) -> int:
        """The number of changes ever counted in this database (0 for a new one).

        Raises:
            MongoUnavailableError: the server is unreachable or timed out.
            MongoRefusedError: the server refused the query.
        """
        try:
            return counter(self._meta, _REVISION)
        except PyMongoError as exc:
            raise self._error("read revision", exc) from exc

    def close(self) -> None:
        """Close the client if this store created it (idempotent); a given client is left open."""
        if self._owned and not self._closed:
            self._client.close()
        self._closed = True

    def _bump(self, name: str, by: int) -> int:
        return bump(self._meta, name, by)

    def _error(self, operation: str, exc: PyMongoError) -> RetryableError | PermanentError:
        return mongo_error(self._where, f"config store {operation}", exc)


class MongoTokenStore(TokenStore):
    """Management API tokens in the ``tokens`` collection, one document per token keyed by its
    id; found by ``tokenHash`` (a unique index, made when the store opens).

    Args:
        url: a connection string (the store creates and closes its client).
        client: an existing client (the caller closes it).
        database: the database.
        timeout_s: as :class:`MongoConfigStore`'s.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        client: MongoClient[Document] | None = None,
        database: str = "eventray",
        timeout_s: float = 5.0,
    ) -> None:
        opened = open_client(url, client, database=database, timeout_s=timeout_s,
                             operation="open tokens")  # fmt: skip
        self._owned, self._where, client = opened.owned, opened.where, opened.client
        try:
            self._client: MongoClient[Document] = client
            self._tokens: Collection[Document] = client[database]["tokens"]
            self._tokens.create_index("tokenHash", unique=True)
        except PyMongoError as exc:
            raise mongo_error(self._where, "open tokens", exc) from exc
        self._closed = False

    def add(self, record: TokenRecord) -> None:
        try:
            self._tokens.insert_one({"_id": record.id, **record_to_json(record)})
        except PyMongoError as exc:
            raise mongo_error(self._where, "add token", exc) from exc

    def find(self, token_hash: str) -> TokenRecord | None:
        return self._one({"tokenHash": token_hash})

    def get(self, token_id: str) -> TokenRecord | None:
        return self._one({"_id": token_id})

    def all(self) -> list[TokenRecord]:
        try:
            found = list(self._tokens.find({}))
        except PyMongoError as exc:
            raise mongo_error(self._where, "read tokens", exc) from exc
        found.sort(key=lambda doc: (str(doc["created"]), str(doc["_id"])))
        return [record_from_json(doc) for doc in found]

    def revoke(self, token_id: str, at: datetime) -> TokenRecord | None:
        try:  # only the first revocation sets the time
            self._tokens.update_many(
                {"_id": token_id, "revoked": None}, {"$set": {"revoked": at.isoformat()}}
            )
        except PyMongoError as exc:
            raise mongo_error(self._where, "revoke token", exc) from exc
        return self.get(token_id)

    def close(self) -> None:
        if self._owned and not self._closed:
            self._client.close()
        self._closed = True

    def _one(self, query: Document) -> TokenRecord | None:
        try:
            found = self._tokens.find_one(query)
        except PyMongoError as exc:
            raise mongo_error(self._where, "read token", exc) from exc
        return record_from_json(found) if found is not None else None


def _stripped(doc: Document) -> Document:
    return {k: v for k, v in doc.items() if k not in _RESERVED}


def _split(key: str) -> tuple[str, str]:
    kind, _, entity_id = key.partition("/")
    return kind, entity_id
