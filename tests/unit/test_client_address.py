"""The client address behind trusted proxies (pipeline/client_address.py)."""

from __future__ import annotations

import re

import pytest

from eventray.pipeline.client_address import client_address, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    assert client_address("203.0.113.9", ["192.0.2.1"], PROXIES) == "203.0.113.9"
    assert client_address("203.0.113.9", ["192.0.2.1"], ()) == "203.0.113.9"  # none trusted


def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    # the client wrote a forged first hop; the proxies appended what they saw
    hops = ["192.0.2.1, 198.51.100.7", "10.1.2.3"]
    assert client_address("127.0.0.1", hops, PROXIES) == "198.51.100.7"
    assert client_address("10.9.9.9", ["198.51.100.7"], PROXIES) == "198.51.100.7"
    assert client_address("10.9.9.9", [], PROXIES) == "10.9.9.9"  # no header: the peer
    assert client_address("10.9.9.9", ["10.1.1.1"], PROXIES) == "10.1.1.1"  # all trusted
    assert client_address("10.9.9.9", ["garbage"], PROXIES) == "garbage"  # not an IP: refused later


def test_a_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not an IP network")):
        parse_networks(["10.0.0.0/33"])
