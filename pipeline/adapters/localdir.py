"""BlobStore on a local directory: the embedded default for the script cache's L2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from eventray.pipeline.ports import BlobStore

__all__ = ["LocalDirBlobStore"]


class LocalDirBlobStore(BlobStore):
    """Keys map to files under ``root``; writes are atomic (temp file + rename), so a reader in
    another process never sees half a blob."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p not in ("", ".", "..")]
        if not parts:
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None  # as S3 answers for a key that is only a prefix of others

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
