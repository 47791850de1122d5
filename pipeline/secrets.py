"""Secrets for ``{{secrets.NAME}}``, per organization, and their redaction.

A secret belongs to one organization. A trigger renders the secrets of the organization that
owns it, and an ancestor's only where that ancestor marked the secret ``shared`` (the nearest
one wins), so no tenant's trigger can render another tenant's secret by naming it. The source
is a table ``{orgId: {NAME: value | {value, shared}}}`` (:func:`parse_secrets` checks it);
:class:`DictSecrets` holds one in memory, and ``pipeline.adapters.secrets_file`` reads one from
an owner-only file.

Where a running stack looks (:class:`LayeredSecrets`), first to last: the encrypted store
(``pipeline.secret_store``, written through the management API), the secrets file, then
environment variables ``EVENTRAY_SECRET__<orgId>__<NAME>`` (:class:`EnvSecrets`). The first
layer holding an organization's ``NAME`` gives its value and its ``shared`` flag; the lineage
is then walked as above over the merged table, so an organization's own secret from any layer
wins over an ancestor's shared one.

Every value a provider hands out is remembered so that the deliverer can replace it with
``***`` in everything it stores or logs (request, response, error), wherever the template put
it: a header, a URL or a body.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.ports import SecretsProvider

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "DictSecrets",
    "EnvSecrets",
    "LayeredSecrets",
    "OrgSecrets",
    "Secret",
    "SecretTable",
    "SecretsSource",
    "TableSource",
    "env_variable",
    "parse_secrets",
    "redact",
]

REDACTED = "***"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_PREFIX = "EVENTRAY_SECRET__"
# Names an environment variable can carry: no leading "_" and no "__", so the variable's last
# "__" always ends the organization id and no two (organization, name) pairs share a variable.
_ENV_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*_?")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Secret:
    value: str
    shared: bool = False

    def __repr__(self) -> str:  # never print a value by accident
        return f"Secret(shared={self.shared})"


SecretTable = Mapping[str, Mapping[str, Secret]]


class OrgSecrets(SecretsProvider):
    """What one organization's triggers may render; remembers every value it handed out."""

    def __init__(self, table: SecretTable, lineage: Sequence[str]) -> None:
        self._table = table
        self._lineage = tuple(lineage)
        self.used: set[str] = set()

    def secret(self, name: str) -> str | None:
        for depth, org_id in enumerate(self._lineage):
            found = self._table.get(org_id, {}).get(name)
            if found is not None and (depth == 0 or found.shared):
                self.used.add(found.value)
                return found.value
        return None

    def redact(self, text: str) -> str:
        return redact(text, self.used)


class SecretsSource(Protocol):
    """Hands out the provider for one organization (given with its ancestors)."""

    def for_org(self, lineage: Sequence[str]) -> OrgSecrets:
        """``lineage``: the organization, then its parent, up to the root."""
        ...


class DictSecrets(SecretsSource):
    """The in-memory source (tests, the single-process baseline)."""

    def __init__(self, table: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.table: dict[str, dict[str, Secret]] = parse_secrets(table or {}, "secrets")

    def for_org(self, lineage: Sequence[str]) -> OrgSecrets:
        return OrgSecrets(self.table, lineage)


class TableSource(Protocol):
    """A layer of :class:`LayeredSecrets`: its table, refreshed as the layer decides (the same
    object while nothing changed)."""

    def table(self) -> SecretTable: ...


def env_variable(org_id: str, name: str) -> str | None:
    """The environment variable holding ``org_id``'s ``name``; None when the name cannot be
    one (it starts with ``_`` or holds ``__``)."""
    return f"{ENV_PREFIX}{org_id}__{name}" if _ENV_NAME.fullmatch(name) else None


class EnvSecrets:
    """Secrets from environment variables ``EVENTRAY_SECRET__<orgId>__<NAME>`` (the organization
    id exactly as written, ``-`` included: ``env``, Docker and Kubernetes pass such names),
    private to that organization (share with the store or the file). Read once: a process's
    environment does not change.

    Args:
        environ: the variables (default: this process's).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        table: dict[str, dict[str, Secret]] = {}
        for variable, value in (os.environ if environ is None else environ).items():
            if not variable.startswith(ENV_PREFIX):
                continue
            org_id, sep, name = variable[len(ENV_PREFIX) :].rpartition("__")
            if not sep or not org_id or not _ENV_NAME.fullmatch(name) or not value:
                log.warning("%s is not %s<orgId>__<NAME> with a value; ignored", variable,
                            ENV_PREFIX)  # fmt: skip
                continue
            table.setdefault(org_id, {})[name] = Secret(value, shared=False)
        self._table = table

    def table(self) -> SecretTable:
        return self._table


class LayeredSecrets(SecretsSource):
    """Layers in order of precedence (see the module's docstring); each is asked for its table
    at most every ``check_every_s``, and the tables are merged again when one changed.

    Args:
        layers: e.g. the stored secrets, the file, the environment.
    """

    def __init__(self, layers: Sequence[TableSource], *, check_every_s: float = 1.0) -> None:
        self.layers = tuple(layers)
        self.check_every_s = check_every_s
        self._checked = time.monotonic()
        self._seen: tuple[SecretTable, ...] = ()
        self._merged: dict[str, dict[str, Secret]] = {}
        self._merge()

    def for_org(self, lineage: Sequence[str]) -> OrgSecrets:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._merge()
        return OrgSecrets(self._merged, lineage)

    def _merge(self) -> None:
        tables = tuple(layer.table() for layer in self.layers)
        # the tables themselves are kept (not their ids, which a new table could reuse)
        if len(tables) == len(self._seen) and all(
            a is b for a, b in zip(tables, self._seen, strict=True)
        ):
            return
        merged: dict[str, dict[str, Secret]] = {}
        for table in reversed(tables):  # the first layer is written last and wins
            for org_id, secrets in table.items():
                merged.setdefault(org_id, {}).update(secrets)
        self._merged, self._seen = merged, tables


def parse_secrets(data: object, source: str) -> dict[str, dict[str, Secret]]:
    """The table from its document; raises :class:`ConfigError` naming every bad entry (never
    its value)."""
    issues: list[ConfigIssue] = []

    def bad(path: str, reason: str) -> None:
        issues.append(ConfigIssue(source, path, reason, "Secrets", ""))

    table: dict[str, dict[str, Secret]] = {}
    if data is None:
        return table
    if not isinstance(data, Mapping):
        bad("", "must map organization ids to {NAME: value} tables")
        raise ConfigError(issues)
    for org_id, entries in data.items():
        if not isinstance(org_id, str) or not isinstance(entries, Mapping):
            bad(str(org_id), "must be an organization id mapping to {NAME: value}")
            continue
        secrets: dict[str, Secret] = {}
        for name, entry in entries.items():
            path = f"{org_id}.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                bad(path, "a secret's name is letters, digits and '_' (not starting with a digit)")
                continue
            if isinstance(entry, Mapping):
                value, shared = entry.get("value"), entry.get("shared", False)
                unknown = set(entry) - {"value", "shared"}
                if unknown:
                    bad(path, f"unknown field(s) {sorted(map(str, unknown))}; use value, shared")
                    continue
            else:
                value, shared = entry, False
            if not isinstance(value, str) or not value:
                bad(path, "the value must be a non-empty string")
                continue
            if not isinstance(shared, bool):
                bad(path, "shared must be true or false")
                continue
            secrets[name] = Secret(value, shared)
        table[org_id] = secrets
    if issues:
        raise ConfigError(issues)
    return table


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with each value (as written, or percent-encoded as it appears in a URL)
    replaced by ``***``; the longest first, so a value containing another goes whole."""
    if not text:
        return text
    forms = {form for value in values for form in (value, quote(value, safe=""), quote(value))}
    for form in sorted((f for f in forms if f), key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
