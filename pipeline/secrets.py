"""Secrets for ``{{secrets.NAME}}``: from the environment (``EVENTRAY_SECRET_<NAME>``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from eventray.pipeline.ports import SecretsProvider

__all__ = ["EnvSecrets"]


class EnvSecrets(SecretsProvider):
    """Reads ``EVENTRAY_SECRET_<NAME>`` (name upper-cased) when a secret is rendered, so a
    rotated secret applies to the next delivery without a restart."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ if environ is not None else os.environ

    def secret(self, name: str) -> str | None:
        return self._environ.get(f"EVENTRAY_SECRET_{name.upper()}")
