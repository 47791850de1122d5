"""Where trigger deliveries may connect: public addresses, plus the networks an operator allows.

A trigger's endpoint is written by a tenant, and the platform runs next to things a tenant must
not reach: its own metrics and admin ports on loopback, the cloud's metadata service
(169.254.169.254), databases on the private network. So a delivery may only connect to an
address that is globally routable, unless it lies in one of the networks named by the setting
``triggers.allow_networks``. The check is made on the *resolved* address (a hostname can point
anywhere) and again on every redirect hop, by the senders that own the connections
(``http_sender``, ``smtp_sender``); this module holds the decision, free of any driver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.networks import IPNetwork, parse_network

__all__ = [
    "ALLOW_SETTING",
    "DeliveryRefused",
    "EgressPolicy",
    "EgressRefused",
    "IPAddress",
    "IPNetwork",
    "parse_network",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_SETTING = "triggers.allow_networks"
"""The setting a refusal tells the operator to change."""


class EgressRefused(OSError):
    """A connection the policy forbids, raised where a resolver or socket factory would fail.

    An ``OSError`` so that it travels through the drivers' connection code (aiohttp and smtplib
    pass resolver and socket errors up) and the sender can tell it apart from a network failure.
    """

    def __init__(
        self,
        target: str,
        host: str,
        port: int,
        address: str,
        kind: str,
        setting: str = ALLOW_SETTING,
    ) -> None:
        where = f"[{host}]" if ":" in host else host
        super().__init__(
            f"{target} {where}:{port} resolves to {address}, {kind}; allow it with {setting}"
        )
        self.host = host
        self.port = port
        self.address = address
        self.kind = kind


class DeliveryRefused(PermanentError):
    """A delivery the egress policy refused: it fails once and is not retried, since the same
    endpoint will resolve to the same forbidden place until the trigger or the setting changes."""


def _judged(address: IPAddress) -> list[IPAddress]:
    """The addresses that must each be public for ``address`` to be reached.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) *is* its IPv4 address to a dual-stack
    socket, so only that is judged; a 6to4 or Teredo address is judged with the IPv4 host it
    names.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    out: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            out.append(address.sixtofour)
        if address.teredo is not None:
            out.append(address.teredo[1])
    return out


def _kind(address: IPAddress) -> str | None:
    """What makes one address non-public, as the refusal names it; ``None`` when public.

    ``is_global`` alone is not enough: Python counts multicast, IPv4-compatible and NAT64
    (reserved) and IPv6 site-local addresses as global.
    """
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-public address (such as carrier-grade NAT)"
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which addresses deliveries may connect to: public ones, and those in ``allowed``.

    The default (no allowed networks) refuses loopback, private, link-local (and so the cloud
    metadata address), carrier-grade NAT, unspecified, multicast and reserved addresses.
    ``setting`` is the setting a refusal names (the trigger senders' by default; the ingress
    fetching a tenant's JWKS has its own).
    """

    allowed: tuple[IPNetwork, ...] = ()
    setting: str = ALLOW_SETTING

    @classmethod
    def allowing(cls, networks: Iterable[str], *, setting: str = ALLOW_SETTING) -> EgressPolicy:
        """A policy that also allows ``networks`` (strings as the setting takes them)."""
        return cls(tuple(parse_network(n) for n in networks), setting)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached (``"a loopback address"``), or ``None`` if it may.

        Raises:
            ValueError: ``address`` is not an IP address.
        """
        parsed = ipaddress.ip_address(address)
        judged = _judged(parsed)
        named = [parsed, *judged]
        if any(a in n for a in named for n in self.allowed if a.version == n.version):
            return None
        for candidate in reversed(judged):  # the IPv4 host first: it is where packets go
            kind = _kind(candidate)
            if kind is not None:
                return kind
        return None

    def allows(self, address: str) -> bool:
        """Whether ``address`` may be reached."""
        return self.refusal(address) is None

    def check(self, target: str, host: str, port: int, addresses: Sequence[str]) -> list[str]:
        """The addresses ``host`` resolved to that may be reached, in their order.

        Args:
            target: what is connecting, for the message (``"trigger endpoint"``).
            host: the name (or IP literal) as the trigger gives it.
            port: the port, for the message.
            addresses: what ``host`` resolved to.

        Raises:
            EgressRefused: none of ``addresses`` may be reached (naming the first).
        """
        allowed: list[str] = []
        first: tuple[str, str] | None = None
        for address in addresses:
            kind = self.refusal(address)
            if kind is None:
                allowed.append(address)
            elif first is None:
                first = (address, kind)
        if not allowed and first is not None:
            raise EgressRefused(target, host, port, *first, setting=self.setting)
        return allowed

    def resolve(self, target: str, host: str, port: int) -> list[str]:
        """Resolve ``host`` (blocking) and keep the addresses that may be reached.

        Raises:
            EgressRefused: it resolves only to addresses that may not be reached.
            OSError: resolution failed (``socket.gaierror``).
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        return self.check(target, host, port, addresses)
