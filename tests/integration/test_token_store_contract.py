"""The TokenStore contract, run against every adapter that can run here: the in-memory twin,
the file store (``<data_dir>/tokens.json``) and MongoDB over mongomock (see the config store's
contract for what mongomock does and does not prove); a real MongoDB with
``EVENTRAY_TEST_MONGODB_URL``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock
import pymongo
import pytest

from eventray.pipeline.adapters.file_tokens import FileTokenStore
from eventray.pipeline.adapters.memory_tokens import MemoryTokenStore
from eventray.pipeline.adapters.mongo_config import MongoTokenStore
from eventray.pipeline.errors import PermanentError
from eventray.pipeline.ports import TokenRecord, TokenStore

pytestmark = pytest.mark.services

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
Opener = Callable[[], TokenStore]


@pytest.fixture(params=["memory", "file", "mongomock", "mongodb"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[TokenStore] = []
    if request.param == "memory":
        memory = MemoryTokenStore()

        def make() -> TokenStore:
            return memory

    elif request.param == "file":

        def make() -> TokenStore:
            return FileTokenStore(path=tmp_path / "data" / "tokens.json")

    elif request.param == "mongomock":
        client: Any = mongomock.MongoClient()

        def make() -> TokenStore:
            return MongoTokenStore(client=client)

    else:
        url = os.environ.get("EVENTRAY_TEST_MONGODB_URL")
        if not url:
            pytest.skip("EVENTRAY_TEST_MONGODB_URL is not set: no MongoDB server to test against")
        database = f"eventray_test_{uuid.uuid4().hex[:12]}"

        def make() -> TokenStore:
            return MongoTokenStore(url=url, database=database)

        request.addfinalizer(lambda: pymongo.MongoClient(url).drop_database(database))

    def open_one() -> TokenStore:
        store = make()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            store.close()


def record(token_id: str, **fields: Any) -> TokenRecord:
    base: dict[str, Any] = dict(
        id=token_id, name=f"name-{token_id}", org_id="acme", role="viewer",
        token_hash=f"hash-{token_id}", created=NOW, expires=NOW + timedelta(days=1),
    )  # fmt: skip
    return TokenRecord(**{**base, **fields})


def test_add_find_get_all(open_store: Opener) -> None:
    store = open_store()
    store.add(record("a"))
    store.add(record("b", role="admin", expires=None, created=NOW + timedelta(seconds=1)))
    assert store.find("hash-a") == record("a")
    assert store.get("b") == record("b", role="admin", expires=None,
                                    created=NOW + timedelta(seconds=1))  # fmt: skip
    assert store.find("hash-zzz") is None and store.get("zzz") is None
    assert [r.id for r in open_store().all()] == ["a", "b"]  # another handle sees them


def test_ids_and_hashes_are_unique(open_store: Opener) -> None:
    store = open_store()
    store.add(record("a"))
    with pytest.raises((ValueError, PermanentError)):
        store.add(record("a", token_hash="other"))
    with pytest.raises((ValueError, PermanentError)):
        store.add(record("c", token_hash="hash-a"))
    assert [r.id for r in store.all()] == ["a"]


def test_revoke_keeps_the_record_and_the_first_time(open_store: Opener) -> None:
    store = open_store()
    store.add(record("a"))
    first = store.revoke("a", NOW + timedelta(hours=1))
    assert first is not None and first.revoked == NOW + timedelta(hours=1)
    again = store.revoke("a", NOW + timedelta(hours=2))
    assert again is not None and again.revoked == NOW + timedelta(hours=1)
    assert store.find("hash-a") == first  # kept: histories name its id
    assert store.revoke("nope", NOW) is None


def test_the_file_is_the_owner_s_alone(tmp_path: Path) -> None:
    store = FileTokenStore(path=tmp_path / "data" / "tokens.json")
    store.add(record("a"))
    assert (tmp_path / "data" / "tokens.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "data" / "tokens.json").write_text("{broken")
    with pytest.raises(PermanentError, match="unreadable"):
        FileTokenStore(path=tmp_path / "data" / "tokens.json").all()
