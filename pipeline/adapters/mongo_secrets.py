"""SecretStore on MongoDB, beside the entities and tokens (``EVENTRAY_MONGODB_URL``).

- ``secrets``: one document per secret, keyed by its organization and name (a JSON pair, so
  no id or name can be read as another), with its value sealed: the database never holds a
  plain value or a key.
- ``secret_changes``: one document per change (who, when, organization, name, operation).
- ``meta``'s ``secrets`` counter: bumped with ``$inc`` after each write, so the lanes' once-a-
  second :meth:`revision` is one small read, and a reader that sees revision N finds N's
  secrets.

On a multi-node cluster this is the store every lane reads, wherever it runs (the file store
is on the head node's disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import orjson
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from eventray.pipeline.adapters.mongo_client import (
    Document,
    bump,
    counter,
    mongo_error,
    open_client,
)
from eventray.pipeline.ports import Author
from eventray.pipeline.secret_store import (
    SealedSecret,
    SecretChange,
    SecretStore,
    change_from_json,
    change_to_json,
    sealed_from_json,
    sealed_to_json,
)

__all__ = ["MongoSecretStore"]

_COUNTER: Final = "secrets"


def _key(org_id: str, name: str) -> str:
    return orjson.dumps([org_id, name]).decode()


class MongoSecretStore(SecretStore):
    """Args:
    url: a connection string (the store creates and closes its client).
    client: an existing client (the caller closes it).
    database: the database (the config store's).
    timeout_s: how long one operation may wait for a server.
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
                             operation="open secrets")  # fmt: skip
        self._owned, self._where, client = opened.owned, opened.where, opened.client
        self._client: MongoClient[Document] = client
        db = client[database]
        self._secrets: Collection[Document] = db["secrets"]
        self._changes: Collection[Document] = db["secret_changes"]
        self._meta: Collection[Document] = db["meta"]
        self._closed = False

    def revision(self) -> int:
        try:
            return counter(self._meta, _COUNTER)
        except PyMongoError as exc:
            raise mongo_error(self._where, "read secrets revision", exc) from exc

    def all(self) -> list[SealedSecret]:
        try:
            found = list(self._secrets.find({}))
        except PyMongoError as exc:
            raise mongo_error(self._where, "read secrets", exc) from exc
        records = [sealed_from_json(doc) for doc in found]
        return sorted(records, key=lambda r: (r.org_id, r.name))

    def get(self, org_id: str, name: str) -> SealedSecret | None:
        try:
            found = self._secrets.find_one({"_id": _key(org_id, name)})
        except PyMongoError as exc:
            raise mongo_error(self._where, "read secret", exc) from exc
        return sealed_from_json(found) if found is not None else None

    def put(self, record: SealedSecret) -> bool:
        key = _key(record.org_id, record.name)
        try:
            result = self._secrets.replace_one(
                {"_id": key}, {"_id": key, **sealed_to_json(record)}, upsert=True
            )
            created = result.upserted_id is not None
            self._record([SecretChange(record.org_id, record.name, "set", record.updated,
                                       record.updated_by, record.shared, created)])  # fmt: skip
        except PyMongoError as exc:
            raise mongo_error(self._where, "write secret", exc) from exc
        return created

    def delete(
        self, org_id: str, name: str, *, at: datetime, author: Author
    ) -> SealedSecret | None:
        try:
            gone = self._secrets.find_one_and_delete({"_id": _key(org_id, name)})
            if gone is None:
                return None
            self._record([SecretChange(org_id, name, "delete", at, author)])
        except PyMongoError as exc:
            raise mongo_error(self._where, "delete secret", exc) from exc
        return sealed_from_json(gone)

    def reseal(self, records: Sequence[SealedSecret]) -> int:
        done: list[SealedSecret] = []
        try:
            for r in records:  # one by one: a secret deleted meanwhile stays deleted
                key = _key(r.org_id, r.name)
                if self._secrets.replace_one({"_id": key}, {"_id": key, **sealed_to_json(r)}
                                             ).matched_count:  # fmt: skip
                    done.append(r)
            if done:
                self._record([SecretChange(r.org_id, r.name, "rekey", r.updated, r.updated_by,
                                           r.shared) for r in done])  # fmt: skip
        except PyMongoError as exc:
            raise mongo_error(self._where, "re-seal secrets", exc) from exc
        return len(done)

    def changes(self) -> list[SecretChange]:
        try:
            found = list(self._changes.find({}))
        except PyMongoError as exc:
            raise mongo_error(self._where, "read secret changes", exc) from exc
        found.sort(key=lambda doc: int(doc.get("seq", 0)))
        return [change_from_json(doc) for doc in found]

    def close(self) -> None:
        if self._owned and not self._closed:
            self._client.close()
        self._closed = True

    def _record(self, changes: Sequence[SecretChange]) -> None:
        """The changes, numbered from the revision counter, which this bumps (after the
        secrets were written: a reader seeing the new revision finds them)."""
        last = bump(self._meta, _COUNTER, len(changes))
        first = last - len(changes) + 1
        self._changes.insert_many(
            [{"seq": first + i, **change_to_json(c)} for i, c in enumerate(changes)]
        )
