"""What the management API refuses, as errors that carry their answer.

Each maps onto one HTTP status in ``eventray.actors.api_app``; the services raise them and
never speak HTTP. Scope is enforced by answering :class:`NotFound` for anything outside a
token's subtree, exactly as for an id that does not exist, so ids do not leak.
"""

from __future__ import annotations

from eventray.pipeline.errors import PermanentError

__all__ = ["Forbidden", "Invalid", "NotFound", "Referenced", "Taken", "Unauthorized"]


class Unauthorized(PermanentError):
    """No token, or one that is unknown, expired, revoked, or whose organization is gone (401)."""


class Forbidden(PermanentError):
    """The token's role may not do this (403). Decided before anything is looked up, so it
    says nothing about any entity."""


class NotFound(PermanentError):
    """No such entity, or one outside the token's scope: the two are one answer (404)."""


class Taken(PermanentError):
    """An entity with this kind and id exists already (409). Ids are one namespace per kind for
    the whole platform, so this is the one answer that can tell a tenant that an id is used
    elsewhere: it never says by whom or what it holds."""


class Referenced(PermanentError):
    """A delete of an entity that others still use (409).

    Args:
        message: what is referenced.
        referrers: ``(kind, id, field path)`` of each referrer the caller may see.
        hidden: how many referrers lie outside the caller's scope (counted, never named).
    """

    def __init__(
        self, message: str, referrers: list[tuple[str, str, str]], hidden: int = 0
    ) -> None:
        super().__init__(message)
        self.referrers = referrers
        self.hidden = hidden


class Invalid(PermanentError):
    """A request that is well formed JSON but not a possible change (422), beyond what entity
    validation reports (:class:`~eventray.pipeline.errors.ConfigError` carries those): an id
    in the body that is not the one in the path, a rollback to a revision that never was."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path
