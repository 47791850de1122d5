"""The egress policy's decision, address by address (no network)."""

from __future__ import annotations

import pytest

from eventray.pipeline.adapters.egress import (
    DeliveryRefused,
    EgressPolicy,
    EgressRefused,
    parse_network,
)
from eventray.pipeline.errors import PermanentError

DEFAULT = EgressPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # the cloud metadata service
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped: a dual-stack socket's 127.0.0.1
        ("::ffff:169.254.169.254", "a link-local address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
        ("100.64.0.1", "a non-public address"),  # carrier-grade NAT
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),  # Python calls it global
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("::7f00:1", "a reserved address"),  # IPv4-compatible, which Python calls global
        ("64:ff9b::a00:1", "a reserved address"),  # NAT64 of 10.0.0.1
        ("fec0::1", "a site-local address"),
        ("fd00::1", "a private address"),
        ("192.0.2.1", "a private address"),  # documentation
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    refusal = DEFAULT.refusal(address)
    assert refusal is not None and refusal.startswith(kind)
    assert not DEFAULT.allows(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.refusal(address) is None


def test_allowed_networks_open_exactly_what_they_name() -> None:
    policy = EgressPolicy.allowing(["127.0.0.1/32", "10.1.0.0/16", "fd00::/8"])
    assert policy.allows("127.0.0.1") and policy.allows("::ffff:127.0.0.1")
    assert policy.allows("10.1.200.3") and policy.allows("fd12::1")
    assert not policy.allows("127.0.0.2") and not policy.allows("10.2.0.1")
    assert not policy.allows("169.254.169.254") and not policy.allows("::1")
    assert policy.allows("8.8.8.8")  # public addresses stay allowed


def test_check_keeps_allowed_addresses_and_names_the_first_refused_one() -> None:
    assert DEFAULT.check("trigger endpoint", "h", 80, ["10.0.0.1", "8.8.8.8"]) == ["8.8.8.8"]
    with pytest.raises(EgressRefused) as refused:
        DEFAULT.check("trigger endpoint", "127.0.0.1", 9464, ["127.0.0.1"])
    assert str(refused.value) == (
        "trigger endpoint 127.0.0.1:9464 resolves to 127.0.0.1, a loopback address; "
        "allow it with triggers.allow_networks"
    )
    with pytest.raises(EgressRefused, match=r"^SMTP server \[::1\]:25 resolves to ::1"):
        DEFAULT.check("SMTP server", "::1", 25, ["::1"])
    assert isinstance(refused.value, OSError)  # travels through the drivers' connect code


def test_a_refused_delivery_is_permanent() -> None:
    assert issubclass(DeliveryRefused, PermanentError) and not DeliveryRefused.retryable


def test_networks_are_parsed_leniently_and_invalid_ones_refused() -> None:
    assert str(parse_network("127.0.0.1")) == "127.0.0.1/32"
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"  # host bits dropped
    for bad in ("10.0.0.0/33", "localhost", "300.0.0.1/32", ""):
        with pytest.raises(ValueError, match="is not an IP network"):
            parse_network(bad)


def test_the_ingress_fetches_jwks_under_its_own_allowlist_setting() -> None:
    from eventray.config.settings import IngressSettings
    from eventray.pipeline.errors import SettingsError

    ingress = IngressSettings(jwks_allow_networks=("10.1.2.3/16",))
    assert ingress.jwks_allow_networks == ("10.1.0.0/16",)
    policy = ingress.jwks_egress_policy()
    assert policy.allows("10.1.9.9") and not policy.allows("10.2.0.1")
    with pytest.raises(EgressRefused) as refused:
        policy.check("JWKS URL", "idp.internal", 443, ["10.2.0.1"])
    assert str(refused.value) == (
        "JWKS URL idp.internal:443 resolves to 10.2.0.1, a private address; "
        "allow it with ingress.jwks_allow_networks"
    )
    assert not IngressSettings().jwks_egress_policy().allows("127.0.0.1")  # default: public only
    from eventray.config.settings import load_settings

    with pytest.raises(SettingsError, match="EVENTRAY_INGRESS__JWKS_ALLOW_NETWORKS"):
        load_settings(ingress={"jwks_allow_networks": ["intranet"]})
    with pytest.raises(SettingsError, match="jwks_min_ttl_s must not exceed jwks_max_ttl_s"):
        load_settings(ingress={"jwks_min_ttl_s": 600, "jwks_max_ttl_s": 60})
