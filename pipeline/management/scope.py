"""Who is asking (a :class:`Principal`) and what they may see (a :class:`Scope`).

A token is bound to one organization and one role. Its scope is that organization's subtree:
every organization whose pathKey is the token's organization's pathKey or starts with it
followed by ``/``. The pathKey is looked up in the current configuration on every request, so
a token follows its organization if the tree around it changes, and stops working if the
organization is deleted.

Roles (each includes the one before, except ``ingest``):

- ``viewer`` reads every entity of its scope, and its history;
- ``editor`` also creates, updates, deletes and rolls back entities of its scope;
- ``admin`` also creates, lists and revokes tokens of its scope;
- ``ingest`` may use nothing of the management API (a token for devices and gateways, so a
  credential that leaks from the field opens no configuration).

System rules (a Rule without ``orgId``) belong to no organization: every token but ``ingest``
may read them, since any business rule may use them; only an admin of a root organization
(one without a parent) may write them, since they change what every tenant can deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from eventray.pipeline.management.errors import Forbidden
from eventray.pipeline.ports import LOCAL_ADMIN, Author

__all__ = ["LOCAL", "ROLES", "Principal", "Role", "Scope", "covers"]

Role = Literal["admin", "editor", "viewer", "ingest"]
ROLES: Final[tuple[Role, ...]] = ("admin", "editor", "viewer", "ingest")
_RANK: Final[dict[str, int]] = {"ingest": 0, "viewer": 1, "editor": 2, "admin": 3}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a management operation.

    Attributes:
        token_id: the token's public id (``local`` for the local admin).
        name: the token's name, recorded as the author of changes.
        org_id: the organization whose subtree is the scope; None for the local admin, who
            holds the data directory's admin token and so may do anything.
        role: what it may do.
    """

    token_id: str
    name: str
    org_id: str | None
    role: Role

    @property
    def author(self) -> Author:
        return LOCAL_ADMIN if self.org_id is None else Author(self.name, self.token_id)

    def require(self, role: Role) -> None:
        """Refuse unless this principal's role includes ``role``.

        Raises:
            Forbidden: it does not (an ``ingest`` token never does).
        """
        if self.role == "ingest" or _RANK[self.role] < _RANK[role]:
            raise Forbidden(f"a {self.role} token may not do this (needs {role})")


LOCAL: Final = Principal("local", LOCAL_ADMIN.name, None, "admin")
"""The local admin: the CLI on the data directory, with its admin token."""


def covers(scope_path: str, path_key: str) -> bool:
    """Whether ``path_key`` is ``scope_path`` or below it."""
    return path_key == scope_path or path_key.startswith(scope_path + "/")


@dataclass(frozen=True, slots=True)
class Scope:
    """What one principal may see, against one configuration.

    Attributes:
        principal: who.
        path_key: the pathKey of the principal's organization; None: everything (the local
            admin).
        root: whether that organization has no parent (its admins write system rules).
        org_paths: every organization's pathKey, to decide for an ``orgId``.

    This is what a router over stored data filters by: an organization is visible when
    :meth:`covers_org` says so, a row by its ``path_key`` with :meth:`covers_path`; a query
    may add ``path_key = P OR startsWith(path_key, P || '/')`` with P = :attr:`path_key`.
    """

    principal: Principal
    path_key: str | None
    root: bool = False
    org_paths: Mapping[str, str] = field(default_factory=dict, repr=False)

    def covers_path(self, path_key: str | None) -> bool:
        """Whether something under ``path_key`` is visible (None: no organization, e.g. a
        system rule: visible to all)."""
        if self.path_key is None or path_key is None:
            return True
        return covers(self.path_key, path_key)

    def covers_org(self, org_id: str | None) -> bool:
        """Whether organization ``org_id`` (None: no organization) is in the scope; an
        unknown organization never is, except for the local admin."""
        if org_id is None or self.path_key is None:
            return True
        path = self.org_paths.get(org_id)
        return path is not None and covers(self.path_key, path)

    def org_ids(self) -> set[str]:
        """Every organization in the scope."""
        return {org for org in self.org_paths if self.covers_org(org)}

    @property
    def writes_system_rules(self) -> bool:
        """The local admin, or an admin of a root organization."""
        return self.path_key is None or (self.root and self.principal.role == "admin")
