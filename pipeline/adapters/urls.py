"""Server URLs as they may be shown: the embedded servers' URLs carry a generated password
(``nats://eventray:<password>@...``, ``redis://:<password>@...``), and error messages, logs and
``eventray status`` must never repeat it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redacted"]


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (each of a comma-separated list)."""
    if "," in url:
        return ",".join(redacted(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literals keep their brackets
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # not a URL we can take apart: show nothing of it that might be secret
        return "<url>"
    return urlunsplit(parts._replace(netloc=netloc))
