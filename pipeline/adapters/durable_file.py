"""Replacing a small file so that a crash leaves the old version or the new one, never half.

The embedded stores (the config store's data file, ``tokens.json``, ``secrets.enc``) are each
one file rewritten whole on every change: written to a temporary file in the same directory
(``mkstemp``: mode 0600, and ``os.replace`` keeps it), flushed and fsynced, renamed over the
old one, and the directory fsynced so the rename itself survives a machine crash.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["replace_durably"]


def replace_durably(path: Path, body: bytes, *, prefix: str = ".tmp-") -> None:
    """Make ``body`` the content of ``path`` (mode 0600), atomically and durably."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
