"""Secrets for ``{{secrets.NAME}}``, per organization, and their redaction.

A secret belongs to one organization. A trigger renders the secrets of the organization that
owns it, and an ancestor's only where that ancestor marked the secret ``shared`` (the nearest
one wins), so no tenant's trigger can render another tenant's secret by naming it. The source
is a table ``{orgId: {NAME: value | {value, shared}}}`` (:func:`parse_secrets` checks it);
:class:`DictSecrets` holds one in memory, and ``pipeline.adapters.secrets_file`` reads one from
an owner-only file.

Every value a provider hands out is remembered so that the deliverer can replace it with
``***`` in everything it stores or logs (request, response, error), wherever the template put
it: a header, a URL or a body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from eventray.pipeline.errors import ConfigError, ConfigIssue
from eventray.pipeline.ports import SecretsProvider

__all__ = [
    "REDACTED",
    "DictSecrets",
    "OrgSecrets",
    "Secret",
    "SecretTable",
    "SecretsSource",
    "parse_secrets",
    "redact",
]

REDACTED = "***"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
