"""IP networks as operators write them in settings (allowlists, trusted proxies)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IPNetwork", "parse_network", "parse_networks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: str) -> IPNetwork:
    """``10.0.0.0/8``, ``127.0.0.1`` (a /32) or ``::1/128``; host bits are allowed and dropped.

    Raises:
        ValueError: naming the value and the form expected.
    """
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not an IP network (expected e.g. 10.0.0.0/8, 127.0.0.1/32 or ::1/128)"
        ) from exc


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Each of ``values``; raises ``ValueError`` naming the first bad one."""
    return tuple(parse_network(value) for value in values)
