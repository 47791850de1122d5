"""The embedded store's write-behind: rows it accepted survive a crash of its process (the
write-ahead log is replayed when the store opens), bad rows are refused to the caller at once,
and reads see every accepted row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventray.pipeline.adapters.chdb_store import ChdbEventStore, RowsRejected
from tests.unit.test_storage_rows import sample

pytestmark = pytest.mark.services

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from eventray.pipeline.adapters.chdb_store import ChdbEventStore
    from tests.unit.test_storage_rows import sample
    store = ChdbEventStore(path=Path(sys.argv[1]), database="wb", flush_interval_s=3600)
    store.ensure_schema()
    for table, rows in sample().tuples().items():
        store.insert(table, rows)
    print("accepted", flush=True)
    time.sleep(60)  # killed before any flush
    """
)


def test_accepted_rows_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"accepted"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    expected = {table: len(rows) for table, rows in sample().tuples().items()}
    with ChdbEventStore(path=path, database="wb") as store:
        store.ensure_schema()  # replays the log the killed process left
        for table, count in expected.items():
            found = store.select(f"SELECT count() AS n FROM wb.{table} FINAL")
            assert int(found[0]["n"]) == count, table
        assert not [p for p in (path / "write-ahead" / "wb").glob("*.log") if p.stat().st_size]


def test_bad_rows_are_refused_at_once_and_reads_see_accepted_rows(tmp_path: Path) -> None:
    with ChdbEventStore(path=tmp_path / "chdb", database="wb", flush_interval_s=3600) as store:
        store.ensure_schema()
        [good, *_] = sample().tuples()["dlq"]
        with pytest.raises(RowsRejected):
            store.insert("dlq", [good, (*good[:-1], "not a number")])
        store.insert("dlq", [good])
        assert store.statements == 0  # accepted into the log, not inserted yet
        found = store.select("SELECT count() AS n FROM wb.dlq FINAL")
        assert int(found[0]["n"]) == 1 and store.flushes == 1  # the read flushed first


def test_the_flusher_inserts_without_being_asked(tmp_path: Path) -> None:
    import time

    with ChdbEventStore(path=tmp_path / "chdb", database="wb", flush_interval_s=0.05) as store:
        store.ensure_schema()
        store.insert("events", sample().tuples()["events"])
        deadline = time.monotonic() + 10
        while store.flushes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.flushes == 1 and store.statements == 1
