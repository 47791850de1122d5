"""The BlobStore contract, run against the local-directory store and the MinIO adapter.

No MinIO server can be installed on this machine, so the MinIO adapter talks to moto's server
(``moto.server.ThreadedMotoServer``, from the ``moto[server]`` wheel) instead: an S3-compatible
HTTP server, started once for this module on 127.0.0.1 and a port the OS picks, and stopped at
the end. The adapter's requests go over real HTTP with real S3 signing through the minio
package; what moto cannot show is MinIO's own behaviour beyond the S3 API (its consistency
under load, erasure coding, its error pages), and it does not check signatures.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer
from urllib3.exceptions import MaxRetryError

from eventray.pipeline.adapters.localdir import LocalDirBlobStore
from eventray.pipeline.adapters.minio_blob import BlobStoreUnavailableError, MinioBlobStore
from eventray.pipeline.ports import BlobStore
from eventray.pipeline.scripts.cache import ScriptCache
from eventray.pipeline.scripts.executor import ScriptJob, TemplateExecutor
from tests.unit.test_scripts_cache import tpl

pytestmark = pytest.mark.services

# moto accepts any credentials but the client must sign with some.
ACCESS_KEY, SECRET_KEY = "testing", "testing-secret"
MIB = random.Random(7).randbytes(1 << 20)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server on loopback, alive for this module."""
    # Port 0 lets the server bind a free port itself (no gap between probing and binding);
    # get_host_and_port() reports the one it got.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        yield f"{host}:{port}"
    finally:
        server.stop()


def minio_store(endpoint: str, *, bucket: str | None = None, prefix: str = "") -> MinioBlobStore:
    return MinioBlobStore(
        endpoint=endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket=bucket or f"eventray-{uuid.uuid4().hex[:12]}",
        prefix=prefix,
        timeout_s=5.0,
    )


@pytest.fixture(params=["localdir", "minio"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "localdir":
        yield LocalDirBlobStore(tmp_path / "blobs")
        return
    blobs = minio_store(request.getfixturevalue("s3_endpoint"), prefix="cache/")
    try:
        yield blobs
    finally:
        blobs.close()


def test_missing_key_is_none(store: BlobStore) -> None:
    assert store.get("templates/nope/abc-e1.json") is None


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", bytes(range(256)) * 3, MIB],
    ids=["empty", "one-nul", "all-byte-values", "1MiB"],
)
def test_put_get_round_trip_is_byte_exact(store: BlobStore, data: bytes) -> None:
    store.put("blob.bin", data)
    assert store.get("blob.bin") == data


def test_put_overwrites_longer_and_shorter(store: BlobStore) -> None:
    store.put("k", b"first version, rather long")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    store.put("k", MIB)
    assert store.get("k") == MIB


def test_keys_with_slashes_are_distinct(store: BlobStore) -> None:
    keys = ["templates/t1/aa-e1.json", "templates/t1/bb-e1.json", "templates/t2/aa-e1.json"]
    for key in keys:
        store.put(key, key.encode())
    assert [store.get(key) for key in keys] == [key.encode() for key in keys]
    assert store.get("templates/t3/aa-e1.json") is None


def test_script_cache_hits_l2_from_an_empty_l1(store: BlobStore, tmp_path: Path) -> None:
    template = tpl(f"t-{uuid.uuid4().hex[:8]}", 2)
    first = ScriptCache(l1=LocalDirBlobStore(tmp_path / "node-a"), l2=store)
    first.runner_for(template)
    assert (first.stats.compiles, first.stats.l2_hits) == (1, 0)

    other_node = ScriptCache(
        l1=LocalDirBlobStore(tmp_path / "node-b"), l2=store
    )  # empty L1, same L2
    [out] = TemplateExecutor(other_node).run([ScriptJob(template, b'{"v": 21}')])
    assert out["r"]["data"]["v"] == 42, "the bundle read back from L2 runs"
    stats = other_node.stats
    assert (stats.l2_hits, stats.l1_hits, stats.compiles) == (1, 0, 0)


def test_minio_creates_its_bucket_and_writes_under_its_prefix(s3_endpoint: str) -> None:
    bucket = f"eventray-{uuid.uuid4().hex[:12]}"
    raw = Minio(s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    assert not raw.bucket_exists(bucket)
    prefixed = minio_store(s3_endpoint, bucket=bucket, prefix="l2/")
    assert raw.bucket_exists(bucket)
    prefixed.put("t1/aa-e1.json", b"payload")
    unprefixed = minio_store(s3_endpoint, bucket=bucket)  # the bucket exists already: reused
    assert unprefixed.get("l2/t1/aa-e1.json") == b"payload"
    assert unprefixed.get("t1/aa-e1.json") is None
    prefixed.close()
    unprefixed.close()


def test_unreachable_minio_is_retryable_and_names_what_failed() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        blobs = minio_store(f"{host}:{port}", bucket="eventray-gone")
        blobs.put("k", b"v")
    finally:
        server.stop()  # closes the listening socket: later connections are refused
    where = f"http://127.0.0.1:{port}/eventray-gone is unreachable or failed: MaxRetryError"
    for operation, call in (("get", lambda: blobs.get("k")), ("put", lambda: blobs.put("k", b"w"))):
        with pytest.raises(BlobStoreUnavailableError) as info:
            call()
        assert str(info.value).startswith(f"blob {operation} of 'k' failed: {where}")
        assert info.value.retryable
        assert isinstance(info.value.__cause__, MaxRetryError)
    with pytest.raises(BlobStoreUnavailableError, match="blob bucket check of 'eventray-gone'"):
        minio_store(f"127.0.0.1:{port}", bucket="eventray-gone")
    blobs.close()
