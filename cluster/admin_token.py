"""The stack's local admin credential: ``<data_dir>/admin.token``, which ``eventray apply``
must present.

What it does and does not protect, honestly: ``apply`` writes the entities into the config
store itself (the embedded one is files in ``<data_dir>/config``) and then tells the actors
over NATS with the admin's password from ``stack.json``. Neither step goes through a server
that could check a credential, so what keeps other local users out is the operating system: the
data directory is 0700, and ``stack.json``, this token and the servers' config files are 0600.
A user who cannot enter the data directory can neither read the token nor write the store, with
or without the token. The token makes the requirement explicit (a script must be given it; a
wrong one stops ``apply`` before it reads or writes anything) and is the credential the future
management API with RBAC will check on the server side, where it cannot be bypassed. With an
external config store (``EVENTRAY_MONGODB_URL``) whoever holds that URL can write entities
without any token: that store's own access control is what protects it.

The token is made by ``eventray up`` (or by the first ``apply`` on a data directory no stack has
used yet) and kept across restarts; delete the file to get a new one at the next ``up``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from eventray.pipeline.errors import EventrayError

__all__ = [
    "TOKEN_FILE",
    "TOKEN_VARIABLE",
    "AdminTokenError",
    "check_admin_token",
    "ensure_admin_token",
]

TOKEN_FILE = "admin.token"
TOKEN_VARIABLE = "EVENTRAY_ADMIN_TOKEN"
"""The environment variable ``apply`` reads the token from when ``--token`` is not given."""

_log = logging.getLogger(__name__)


class AdminTokenError(EventrayError):
    """The admin token was wrong, or could not be checked: nothing was applied."""


def ensure_admin_token(data_dir: Path) -> str:
    """The data directory's admin token, made (mode 0600) if there is none yet, or again if
    others could read the one there (it is no secret any more)."""
    path = data_dir / TOKEN_FILE
    try:
        loose = path.stat().st_mode & 0o077
        token = "" if loose else path.read_text().strip()
    except FileNotFoundError:
        loose, token = 0, ""
    if token:
        return token
    if loose:
        _log.warning("%s was readable by others: a new admin token replaces it", path)
    token = secrets.token_urlsafe(32)
    partial = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.replace(partial, path)  # a reader never sees half a token
    return token


def check_admin_token(data_dir: Path, presented: str | None) -> None:
    """Pass if ``presented`` is the data directory's admin token; None presents the token file
    itself (being able to read it is what the token stands for).

    Raises:
        AdminTokenError: the token differs, or the data directory's cannot be read.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        expected = ensure_admin_token(data_dir)
    except PermissionError as exc:
        raise AdminTokenError(
            f"cannot read the admin token in {data_dir}: only the stack's owner may apply"
        ) from exc
    if presented is None:
        return
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise AdminTokenError(
            f"wrong admin token (from --token or {TOKEN_VARIABLE}): it must be the one in "
            f"{data_dir / TOKEN_FILE}; nothing was applied"
        )
