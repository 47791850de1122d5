"""Secrets from an owner-only YAML file: ``{orgId: {NAME: value | {value, shared}}}``.

The file is read when the source is built (a bad file is refused then, naming the entry) and
again when its modification time changes (looked at no more than once a second, not on every
delivery), so a rotated secret applies within a second without a restart; an edit that breaks the file keeps the last good table and logs why, instead
of failing every delivery. A file other users may read or write is refused: secrets are the one
thing a tenant gives us that must not be readable on the machine.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.secrets import (
    OrgSecrets,
    Secret,
    SecretsSource,
    SecretTable,
    parse_secrets,
)

__all__ = ["FileSecrets", "write_secrets_file"]

log = logging.getLogger(__name__)


class FileSecrets(SecretsSource):
    """Args:
    path: the file; absent means no secrets (every ``{{secrets.X}}`` is unknown).
    check_every_s: how often, at most, the file's modification time is looked at.
    """

    def __init__(self, path: Path, *, check_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._checked = time.monotonic()
        self._stamp: tuple[int, int] | None = None
        self._table: dict[str, dict[str, Secret]] = {}
        self._refresh(strict=True)

    def for_org(self, lineage: Sequence[str]) -> OrgSecrets:
        return OrgSecrets(self.table(), lineage)

    def table(self) -> SecretTable:
        """The file's table, read again if it changed (a layer of ``LayeredSecrets``)."""
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._refresh(strict=False)
        return self._table

    def _refresh(self, *, strict: bool) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None or self._table:  # a new object only when it changed
                self._stamp, self._table = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            self._table = self._read(st)
        except ConfigError as exc:
            if strict:
                raise
            log.error("secrets file not reloaded, the previous one stays in use: %s", exc)
        self._stamp = stamp

    def _read(self, st: os.stat_result) -> dict[str, dict[str, Secret]]:
        source = str(self.path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
            raise ConfigError([ConfigIssue(source, "", f"other users may access it (mode {mode}); "
                                           f"run: chmod 600 {source}", "Secrets")])  # fmt: skip
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            # a YAML error quotes the line, which may hold a value: keep only where it is
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(
                [ConfigIssue(source, "", f"cannot be read{at}: {type(exc).__name__}", "Secrets")]
            ) from None
        return parse_secrets(data, source)


def write_secrets_file(path: Path, table: dict[str, dict[str, object]]) -> None:
    """Write ``table`` as a secrets file, owner-only from its first byte (the demo, the bench
    and tests use it; operators write theirs with any editor and ``chmod 600``)."""
    parse_secrets(table, str(path))  # refuse what the reader would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        yaml.safe_dump(table, handle, sort_keys=True)
