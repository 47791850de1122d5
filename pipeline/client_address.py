"""Which address a request comes from, when a proxy may stand in front of the ingress.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only from
proxies the operator trusts (``ingress.trusted_proxies``): walking the header from the right
(the nearest hop), addresses of trusted proxies are skipped and the first other one is the
client. From any other peer the header is ignored and the peer is the client: a device cannot
claim an allowlisted address by writing the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from eventray.pipeline.networks import IPNetwork as Network
from eventray.pipeline.networks import parse_networks

__all__ = ["client_address", "parse_networks"]


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address.

    Args:
        peer: the address the connection comes from.
        forwarded_for: every ``X-Forwarded-For`` header value, in order.
        proxies: the trusted proxies.
    """
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
