"""A write-ahead log of Arrow record batches: what the embedded store has accepted but not yet
inserted into chDB.

Each record is one table's batch as an Arrow IPC stream, framed as ``<table index: u8>
<length: u32 little-endian><IPC bytes>``. Records go to the current segment file with one
``write``; a segment is closed (:meth:`ArrowLog.rotate`) when its batches are about to be
inserted and deleted (:meth:`ArrowLog.drop`) once they are. On start, whatever segments are
left are replayed (:func:`read_segment`): inserts are idempotent (the tables collapse
duplicates by key), so a segment replayed after it was partly inserted only repeats rows.

Durability matches chDB's own: the bytes are in the operating system's page cache once
``append`` returns (they survive the process, not the machine) unless ``fsync`` is on.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as pa_ipc

__all__ = ["ArrowLog", "read_segment"]

_FRAME = struct.Struct("<BI")


def _ipc(batch: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def read_segment(path: Path, tables: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """``(table, record batch)`` for every complete record of a segment; a torn record at the
    end (the process died while writing it, so it was never acknowledged) is ignored."""
    data = path.read_bytes()
    position = 0
    while position + _FRAME.size <= len(data):
        index, size = _FRAME.unpack_from(data, position)
        start = position + _FRAME.size
        if start + size > len(data) or index >= len(tables):
            return
        reader = pa_ipc.open_stream(pa.py_buffer(data[start : start + size]))
        for batch in reader:
            yield tables[index], batch
        position = start + size


class ArrowLog:
    """The segments of a log in ``directory`` (``segment-<n>.log``).

    Args:
        directory: where segments live (the store's own data directory).
        tables: table names; a record stores the table's index.
        fsync: flush every append to the disk (slow; off: as durable as chDB itself).
    """

    def __init__(self, directory: Path, tables: Sequence[str], *, fsync: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.tables = list(tables)
        self.fsync = fsync
        self._index = {name: i for i, name in enumerate(self.tables)}
        numbers = [int(p.stem.split("-")[1]) for p in self.leftovers()]
        self._next = max(numbers, default=0) + 1
        self._fd = -1
        self._current: Path | None = None
        self._open()

    @property
    def current(self) -> Path | None:
        """The segment being written."""
        return self._current

    def leftovers(self) -> list[Path]:
        """Segments on disk, oldest first (at start: what a previous process left)."""
        return sorted(self.directory.glob("segment-*.log"), key=lambda p: int(p.stem.split("-")[1]))

    def _open(self) -> None:
        self._current = self.directory / f"segment-{self._next}.log"
        self._next += 1
        self._fd = os.open(self._current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, table: str, batch: Any) -> int:
        """Log one table's batch; returns the bytes written."""
        payload = _ipc(batch)
        record = _FRAME.pack(self._index[table], len(payload)) + payload
        os.write(self._fd, record)
        if self.fsync:
            os.fsync(self._fd)
        return len(record)

    def rotate(self) -> Path | None:
        """Close the current segment (returned) and start a new one."""
        closed = self._current
        os.close(self._fd)
        self._open()
        return closed

    @staticmethod
    def drop(segments: Sequence[Path]) -> None:
        """Forget segments whose batches are inserted."""
        for segment in segments:
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
