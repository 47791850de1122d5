"""The ConfigStore contract, run against every adapter that can run here.

Backends:

- ``file``: :class:`FileConfigStore` on a temporary directory, the embedded default.
- ``mongomock``: :class:`MongoConfigStore` over ``mongomock.MongoClient()``. mongomock is a
  pymongo-compatible, in-memory client; it stands in for a MongoDB server, which cannot be
  installed on this machine. It runs the adapter's own code through the pymongo Collection API
  (``bulk_write`` of upserting ``ReplaceOne``, ``find_one_and_update`` with ``$inc`` and upsert,
  ``delete_one``, ``find`` with ``$in`` and a projection), so it does verify the adapter's
  logic: keys, upsert by (kind, id), first-put order, revision counting, stripping of ``_id`` and
  ``_seq``, validation. It does not verify anything only a server has: the wire protocol and
  BSON encoding, the server's own semantics for those operators (mongomock re-implements them),
  atomicity and isolation between concurrent clients, timeouts, authentication, size limits.
  mongomock 4.3.0, the latest release, predates the ``sort`` argument that pymongo >= 4.11
  passes from ``ReplaceOne`` into the bulk builder (mongomock issue #912), so the fixture lets
  mongomock's builder accept ``sort=None``, the only value the adapter ever sends.
- ``memory``: :class:`MemoryConfigStore`, the in-memory twin the management API's unit tests
  use: the same suite keeps it honest.
- ``mongodb``: :class:`MongoConfigStore` against a real server at ``EVENTRAY_TEST_MONGODB_URL``,
  in a throwaway database dropped at teardown; skipped when the variable is unset.

The file-only tests cover what only the embedded store must do itself: two processes writing to
one root. The unreachable-server test uses real pymongo against a closed port: no server needed.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import multiprocessing
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import mongomock
import pymongo
import pytest
from mongomock.collection import BulkOperationBuilder
from pymongo.errors import ServerSelectionTimeoutError

from eventray.pipeline.adapters.file_config import FileConfigStore
from eventray.pipeline.adapters.memory_config import MemoryConfigStore
from eventray.pipeline.adapters.mongo_config import MongoConfigStore, MongoUnavailableError
from eventray.pipeline.catalog import Catalog, build_catalog, load_catalog
from eventray.pipeline.errors import (
    ConfigError,
    ConfigIssue,
    PermanentError,
    RevisionConflictError,
)
from eventray.pipeline.loader import entity_from_dict, read_documents
from eventray.pipeline.models import Entity
from eventray.pipeline.ports import LOCAL_ADMIN, Author, ConfigStore

pytestmark = pytest.mark.services

TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"
MONGODB_URL_VAR = "EVENTRAY_TEST_MONGODB_URL"

Opener = Callable[[], ConfigStore]


def _let_mongomock_accept_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    original = BulkOperationBuilder.add_replace
    if "sort" in inspect.signature(original).parameters:
        return  # a mongomock release that knows the argument: nothing to bridge

    def add_replace(
        self: Any, selector: Any, doc: Any, upsert: Any, collation: Any = None,
        hint: Any = None, sort: Any = None,
    ) -> Any:  # fmt: skip
        if sort is not None:
            raise NotImplementedError("mongomock cannot order a replace")
        return original(self, selector, doc, upsert, collation=collation, hint=hint)

    monkeypatch.setattr(BulkOperationBuilder, "add_replace", add_replace)


@pytest.fixture(params=["file", "memory", "mongomock", "mongodb"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Opener]:
    """Opens a new store over the same backing storage each call; all are closed at teardown."""
    opened: list[ConfigStore] = []
    cleanups: list[Callable[[], None]] = []
    if request.param == "file":

        def make() -> ConfigStore:
            return FileConfigStore(root=tmp_path / "config")

    elif request.param == "memory":
        memory = MemoryConfigStore()

        def make() -> ConfigStore:
            return memory

    elif request.param == "mongomock":
        _let_mongomock_accept_sort(monkeypatch)
        client = mongomock.MongoClient()

        def make() -> ConfigStore:
            return MongoConfigStore(client=client)

        cleanups.append(client.close)
    else:
        url = os.environ.get(MONGODB_URL_VAR)
        if not url:
            pytest.skip(f"{MONGODB_URL_VAR} is not set: no MongoDB server to test against")
        database = f"eventray_test_{uuid.uuid4().hex[:12]}"

        def make() -> ConfigStore:
            return MongoConfigStore(url=url, database=database, timeout_s=5.0)

        def drop() -> None:
            admin: pymongo.MongoClient[dict[str, Any]]
            with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as admin:
                admin.drop_database(database)

        cleanups.append(drop)

    def open_one() -> ConfigStore:
        store = make()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            store.close()
        for cleanup in cleanups:
            cleanup()


@pytest.fixture(scope="module")
def sample_documents() -> list[dict[str, Any]]:
    """The sample tenant as documents, ``{file: ...}`` scripts inlined, in load order."""
    issues: list[ConfigIssue] = []
    docs = [doc for _, doc in read_documents([TENANT], issues)]
    assert issues == []
    assert len(docs) == 32  # a changed sample set should be looked at, not silently absorbed
    return docs


def trigger(entity_id: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "Trigger", "id": entity_id, **fields}


def test_put_and_documents_round_trip_in_load_order(
    open_store: Opener, sample_documents: list[dict[str, Any]]
) -> None:
    given = copy.deepcopy(sample_documents)
    store = open_store()
    assert store.put(given) == 1
    assert store.documents() == sample_documents
    assert [(d["kind"], d["id"]) for d in store.documents()] == [
        (d["kind"], d["id"]) for d in sample_documents
    ]
    assert given == sample_documents, "put must not change the caller's documents"
    codec = next(d for d in store.documents() if d.get("id") == "em300-th")
    assert "function decodeUplink" in codec["scriptProcessor"], "{file:} scripts are inlined"


def test_upsert_replaces_by_kind_and_id_in_place(open_store: Opener) -> None:
    store = open_store()
    store.put([trigger("a", name="first"), {"kind": "Rule", "id": "a", "name": "rule"}])
    store.put([trigger("b", name="bee"), trigger("a", name="second")])
    assert store.documents() == [
        trigger("a", name="second"),
        {"kind": "Rule", "id": "a", "name": "rule"},
        trigger("b", name="bee"),
    ]
    store.put([trigger("c", n=1), trigger("c", n=2)])  # the later duplicate wins
    assert store.documents()[-1] == trigger("c", n=2)
    assert len(store.documents()) == 4


def test_delete_removes_exactly_one_entity(open_store: Opener) -> None:
    store = open_store()
    store.put([trigger("a"), trigger("b"), {"kind": "Rule", "id": "b"}, trigger("c")])
    assert store.delete("Trigger", "b") == 2
    assert store.documents() == [trigger("a"), {"kind": "Rule", "id": "b"}, trigger("c")]
    assert store.delete("Trigger", "b") == 2  # gone already: nothing changes
    assert store.delete("Asset", "a") == 2  # same id, other kind: nothing to delete
    assert store.documents() == [trigger("a"), {"kind": "Rule", "id": "b"}, trigger("c")]


def test_revision_counts_every_change_and_nothing_else(open_store: Opener) -> None:
    store = open_store()
    assert store.revision() == 0
    seen = [
        store.put([trigger("a", v=1)]),
        store.put([trigger("a", v=1)]),  # a put is a change even when it rewrites the same
        store.put([trigger("b"), trigger("c")]),  # one batch, one change
        store.delete("Trigger", "a"),
        store.delete("Trigger", "a"),  # no-op
        store.delete("Trigger", "never"),  # no-op
        store.put([]),  # no-op
    ]
    assert seen == [1, 2, 3, 4, 4, 4, 4]
    assert store.revision() == 4


def test_invalid_documents_are_refused_whole(open_store: Opener) -> None:
    store = open_store()
    store.put([trigger("keep")])
    with pytest.raises(ConfigError) as info:
        store.put([trigger("ok"), {"kind": "Trigger"}, trigger("d", at=date(2026, 1, 1)),
                   {"kind": "", "id": "x"}])  # fmt: skip
    assert [(i.source, i.path) for i in info.value.issues] == [
        ("config store put, document [1]", "id"),
        ("config store put, document [2]", ""),
        ("config store put, document [3]", "kind"),
    ]
    assert "not JSON-compatible" in info.value.issues[1].reason
    assert store.documents() == [trigger("keep")]
    assert store.revision() == 1


def test_documents_are_copies(open_store: Opener) -> None:
    store = open_store()
    doc = trigger("a", tags=["x"])
    store.put([doc])
    doc["tags"].append("changed after put")
    store.documents()[0]["tags"].append("changed after read")
    assert store.documents() == [trigger("a", tags=["x"])]


ALICE = Author("alice", "tok-a")


def test_every_change_is_recorded_with_who_and_before_and_after(open_store: Opener) -> None:
    store = open_store()
    store.put([trigger("a", v=1), trigger("b")], author=ALICE, note="first")
    store.put([trigger("a", v=1)])  # unchanged: counted, not recorded
    store.put([trigger("a", v=2)])
    assert store.delete("Trigger", "a", author=ALICE) == 4
    store.put([trigger("a", v=3)], author=ALICE)
    history = store.history("Trigger", "a")
    assert [(c.revision, c.store_revision, c.op, c.author) for c in history] == [
        (1, 1, "create", ALICE),
        (2, 3, "update", LOCAL_ADMIN),
        (3, 4, "delete", ALICE),
        (4, 5, "create", ALICE),  # numbering goes on across a delete
    ]
    assert (history[0].before, history[0].after, history[0].note) == (
        None,
        trigger("a", v=1),
        "first",
    )
    assert (history[1].before, history[1].after) == (trigger("a", v=1), trigger("a", v=2))
    assert (history[2].before, history[2].after) == (trigger("a", v=2), None)
    assert all(c.at.tzinfo is not None for c in history)
    assert [c.revision for c in store.history("Trigger", "b")] == [1]
    assert store.history("Trigger", "never") == []
    assert store.entity_revisions() == {("Trigger", "a"): 4, ("Trigger", "b"): 1}
    reopened = open_store()
    assert [c.revision for c in reopened.history("Trigger", "a")] == [1, 2, 3, 4]


def test_conditional_writes_check_the_entity_revision(open_store: Opener) -> None:
    store = open_store()
    store.put([trigger("a", v=1)], expected={("Trigger", "a"): 0})  # create: must not exist
    with pytest.raises(RevisionConflictError) as info:
        store.put([trigger("a", v=9)], expected={("Trigger", "a"): 0})
    assert (info.value.expected, info.value.actual) == (0, 1)
    store.put([trigger("a", v=2)], expected={("Trigger", "a"): 1})
    with pytest.raises(RevisionConflictError):
        store.put([trigger("a", v=9), trigger("b")], expected={("Trigger", "a"): 1})
    with pytest.raises(RevisionConflictError):
        store.delete("Trigger", "a", expected=1)
    assert store.documents() == [trigger("a", v=2)]
    assert store.revision() == 2
    assert store.delete("Trigger", "a", expected=2) == 3
    with pytest.raises(RevisionConflictError):
        store.put([trigger("a")], expected={("Trigger", "a"): 2})  # deleted: at "0"


def _content(catalog: Catalog) -> Catalog:
    return dataclasses.replace(catalog, sources={})  # where each entity came from differs


def test_stored_documents_build_the_catalog_the_files_build(
    open_store: Opener, sample_documents: list[dict[str, Any]]
) -> None:
    store = open_store()
    store.put(sample_documents)
    issues: list[ConfigIssue] = []
    entities: list[tuple[str, Entity]] = []
    for doc in store.documents():
        entity = entity_from_dict(f"store:{doc['kind']}/{doc['id']}", doc, issues)
        if entity is not None:
            entities.append((f"store:{doc['kind']}/{doc['id']}", entity))
    assert issues == []
    from_store = build_catalog(entities)
    from_files = load_catalog([TENANT])
    assert _content(from_store) == _content(from_files)
    # Sibling order decides unpinned pathKeys: a reordering store would swap these two.
    assert from_store.orgs["factory-alpha"].path_key == "0001/0001/0001"
    assert from_store.orgs["depot-beta"].path_key == "0001/0001/0002"


def test_another_store_on_the_same_backing_sees_every_write(
    open_store: Opener, sample_documents: list[dict[str, Any]]
) -> None:
    first = open_store()
    first.put(sample_documents[:5])
    second = open_store()
    assert (second.revision(), second.documents()) == (1, sample_documents[:5])
    second.put([sample_documents[5]])
    second.delete(sample_documents[0]["kind"], sample_documents[0]["id"])
    assert (first.revision(), first.documents()) == (3, sample_documents[1:6])
    first.close()
    first.close()  # idempotent
    reopened = open_store()  # for the file store: persistence across instances
    assert (reopened.revision(), reopened.documents()) == (3, sample_documents[1:6])


def test_file_store_persists_in_its_root(tmp_path: Path) -> None:
    FileConfigStore(root=tmp_path).put([trigger("a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "entities.json", "history.jsonl"]
    assert FileConfigStore(root=tmp_path).documents() == [trigger("a")]


def test_file_store_reports_an_unreadable_file(tmp_path: Path) -> None:
    store = FileConfigStore(root=tmp_path)
    store.put([trigger("a")])
    (tmp_path / "entities.json").write_bytes(b"{not json")
    with pytest.raises(PermanentError, match=r"config store file .*entities\.json is unreadable"):
        store.documents()


PUTS_PER_PROCESS = 300


def _put_many(root: str, worker: int, start: Any) -> None:
    """Runs in a spawned process: one put per entity, as a CLI loop would."""
    store = FileConfigStore(root=Path(root))
    start.wait()  # both processes begin together, so their puts interleave
    for n in range(PUTS_PER_PROCESS):
        store.put([trigger(f"w{worker}-{n:04d}", n=n)])


def test_two_processes_writing_one_root_lose_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_put_many, args=(str(tmp_path), w, start)) for w in (0, 1)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0]
    store = FileConfigStore(root=tmp_path)
    assert store.revision() == 2 * PUTS_PER_PROCESS
    docs = store.documents()
    assert len(docs) == 2 * PUTS_PER_PROCESS
    for w in (0, 1):
        mine = [d for d in docs if d["id"].startswith(f"w{w}-")]
        assert mine == [trigger(f"w{w}-{n:04d}", n=n) for n in range(PUTS_PER_PROCESS)]


def test_mongo_store_refuses_its_reserved_fields() -> None:
    store = MongoConfigStore(client=mongomock.MongoClient())
    with pytest.raises(ConfigError) as info:
        store.put([trigger("a", _id="x", _seq=1)])
    assert [i.path for i in info.value.issues] == ["_id", "_seq"]
    assert store.revision() == 0


def test_unreachable_mongodb_is_retryable_and_names_what_failed() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"mongodb://eventray:s3cret@127.0.0.1:{port}/?directConnection=true"
    store = MongoConfigStore(url=url, timeout_s=0.3)
    try:
        with pytest.raises(MongoUnavailableError) as info:
            store.put([trigger("a")])
        message = str(info.value)
        assert message.startswith(
            f"config store put failed: MongoDB at mongodb://eventray:***@127.0.0.1:{port}/"
        )
        assert "s3cret" not in message
        assert info.value.retryable
        assert isinstance(info.value.__cause__, ServerSelectionTimeoutError)
        with pytest.raises(MongoUnavailableError, match="config store read revision failed"):
            store.revision()
    finally:
        store.close()


def test_file_store_never_shows_history_a_crashed_writer_left(tmp_path: Path) -> None:
    """Lines appended past the published length (a writer killed before it replaced the data
    file) are not read, and the next writer cuts them."""
    store = FileConfigStore(root=tmp_path)
    store.put([trigger("a", v=1)])
    with (tmp_path / "history.jsonl").open("ab") as log:
        log.write(b'{"kind":"Trigger","id":"a","revision":2,"storeRevision":2,"at":'
                  b'"2026-01-01T00:00:00+00:00","author":{},"op":"update","before":null,'
                  b'"after":null}\n')  # fmt: skip
    assert [c.revision for c in FileConfigStore(root=tmp_path).history("Trigger", "a")] == [1]
    store.put([trigger("a", v=2)])
    history = FileConfigStore(root=tmp_path).history("Trigger", "a")
    assert [(c.revision, c.after) for c in history] == [
        (1, trigger("a", v=1)),
        (2, trigger("a", v=2)),
    ]


def test_file_store_revision_reads_the_file_only_when_it_changed(tmp_path: Path) -> None:
    store = FileConfigStore(root=tmp_path)
    other = FileConfigStore(root=tmp_path)
    assert store.revision() == 0
    other.put([trigger("a")])
    assert store.revision() == 1
    other.delete("Trigger", "a")
    assert store.revision() == 2
