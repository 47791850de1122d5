"""Write-behind in front of the embedded store (real chDB): rows accepted into the log survive a
killed process, the flusher inserts without being asked, and a row the store refuses is kept in
the DLQ with its reason, never dropped and never wedging the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from eventray.pipeline.adapters.chdb_store import ChdbEventStore
from eventray.pipeline.storage.write_behind import WriteBehind, encode_rows
from tests.unit.test_storage_rows import sample

pytestmark = pytest.mark.services

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from eventray.pipeline.adapters.chdb_store import ChdbEventStore
    from eventray.pipeline.storage.write_behind import WriteBehind, encode_rows
    from tests.unit.test_storage_rows import sample
    store = ChdbEventStore(path=Path(sys.argv[1]) / "chdb", database="wb")
    store.ensure_schema()
    log = WriteBehind(store, Path(sys.argv[1]) / "log", flush_interval_s=3600)
    log.start()
    rows = sample().tuples()
    log.append(encode_rows(rows), sum(len(r) for r in rows.values()))
    print("accepted", flush=True)
    time.sleep(60)  # killed before any flush
    """
)


def _counts(store: ChdbEventStore) -> dict[str, int]:
    return {
        table: int(store.select(f"SELECT count() AS n FROM wb.{table} FINAL")[0]["n"])
        for table in sample().tuples()
    }


def test_accepted_rows_survive_a_killed_process(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
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
    with ChdbEventStore(path=tmp_path / "chdb", database="wb") as store:
        store.ensure_schema()
        assert set(_counts(store).values()) == {0}  # the kill came before any insert
        log = WriteBehind(store, tmp_path / "log")
        recovered = log.recover()
        expected = {table: len(rows) for table, rows in sample().tuples().items()}
        assert recovered == sum(expected.values())
        assert _counts(store) == expected
        log.close()
        assert not [p for p in (tmp_path / "log").glob("*.log") if p.stat().st_size]


def test_the_flusher_inserts_on_its_own_and_flush_makes_rows_visible(tmp_path: Path) -> None:
    with ChdbEventStore(path=tmp_path / "chdb", database="wb") as store:
        store.ensure_schema()
        log = WriteBehind(store, tmp_path / "log", flush_interval_s=0.05)
        log.start()
        rows = {"events": sample().tuples()["events"]}
        log.append(encode_rows(rows), len(rows["events"]))
        deadline = time.monotonic() + 10
        while log.flushes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (log.flushes, log.statements) == (1, 1)
        assert _counts(store)["events"] == len(rows["events"])
        slow = WriteBehind(store, tmp_path / "slow", flush_interval_s=3600)
        dlq = {"dlq": sample().tuples()["dlq"][:1]}
        slow.append(encode_rows(dlq), 1)
        assert _counts(store)["dlq"] == 0  # accepted, not inserted yet
        slow.flush()  # what every read does first
        assert _counts(store)["dlq"] == 1
        log.close()
        slow.close()


def test_a_refused_row_is_kept_in_the_dlq_and_the_rest_is_stored(tmp_path: Path) -> None:
    with ChdbEventStore(path=tmp_path / "chdb", database="wb") as store:
        store.ensure_schema()
        log = WriteBehind(store, tmp_path / "log", flush_interval_s=3600)
        events = sample().tuples()["events"]
        bad = (*events[3][:-1], "not a sequence number")  # stream_seq is a UInt64
        log.append(encode_rows({"events": [*events[:3], bad, *events[4:]]}), len(events))
        log.flush()
        assert _counts(store)["events"] == len(events) - 1
        [kept] = store.select("SELECT stage, error, message FROM wb.dlq FINAL")
        assert kept["stage"] == "store:events" and "stream_seq" in orjson.loads(kept["message"])
        assert log.rows_kept_in_dlq == 1
        log.close()
