"""The management API's logic, without a web framework: entities with tenant scope, revision
history and rollback (:mod:`.entities`), tokens and roles (:mod:`.tokens`, :mod:`.scope`).

``eventray.actors.api_app`` serves it over HTTP; the CLI runs it directly on the data
directory when no stack runs. Every operation takes the :class:`Principal` it runs for and
enforces its role and scope itself, so no transport can forget to.
"""

from eventray.pipeline.management.entities import EntityService, Page, Written
from eventray.pipeline.management.errors import (
    Forbidden,
    Invalid,
    NotFound,
    Referenced,
    Taken,
    Unauthorized,
)
from eventray.pipeline.management.kinds import KIND_OF_SLUG, SLUGS, kind_named
from eventray.pipeline.management.scope import LOCAL, ROLES, Principal, Role, Scope
from eventray.pipeline.management.tokens import IssuedToken, TokenService, hash_token

__all__ = [
    "KIND_OF_SLUG",
    "LOCAL",
    "ROLES",
    "SLUGS",
    "EntityService",
    "Forbidden",
    "Invalid",
    "IssuedToken",
    "NotFound",
    "Page",
    "Principal",
    "Referenced",
    "Role",
    "Scope",
    "Taken",
    "TokenService",
    "Unauthorized",
    "Written",
    "hash_token",
    "kind_named",
]
