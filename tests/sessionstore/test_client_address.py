"""Who the client is (pure): the peer, or what a trusted proxy says; garbage never wins."""

from __future__ import annotations

import ipaddress

import pytest

from sessionstore.client_address import (
    DEFAULT_TRUSTED_PROXIES,
    TrustedProxies,
    client_address,
    parse_address,
    parse_networks,
)

TRUSTED = TrustedProxies(parse_networks(DEFAULT_TRUSTED_PROXIES))


def who(peer: str | None, real_ip: str | None = None, *forwarded_for: str,
        trusted: TrustedProxies = TRUSTED) -> str | None:
    address = client_address(peer, real_ip, forwarded_for, trusted)
    return None if address is None else str(address)


def test_a_peer_outside_the_trusted_proxies_is_the_client_whatever_it_says() -> None:
    assert who("203.0.113.9", "198.51.100.1", "198.51.100.2") == "203.0.113.9"
    assert who("2001:db8::9", "198.51.100.1") == "2001:db8::9"


def test_a_trusted_proxy_names_the_client_by_x_real_ip_else_the_last_forwarded_entry() -> None:
    assert who("127.0.0.1", "198.51.100.1", "192.0.2.7") == "198.51.100.1"
    assert who("10.1.2.3", None, "192.0.2.1, 192.0.2.7") == "192.0.2.7"
    assert who("172.16.0.5", None, "192.0.2.1", "192.0.2.2, 192.0.2.8") == "192.0.2.8"
    assert who("::1", "2001:db8::1") == "2001:db8::1"
    assert who("127.0.0.1") == "127.0.0.1"  # nothing said: the proxy itself is the client


@pytest.mark.parametrize("garbage", [
    "", " ", "not an address", "999.1.1.1", "1.2.3.4, 5.6.7.8", "x" * 5000, "\u00e9", "1.2.3.4.",
])
def test_a_header_that_is_not_one_address_is_ignored(garbage: str) -> None:
    assert who("127.0.0.1", garbage) == "127.0.0.1"
    assert who("127.0.0.1", garbage, "192.0.2.7") == "192.0.2.7"
    assert who("127.0.0.1", None, garbage + ",") == "127.0.0.1"


def test_address_forms_a_proxy_may_write() -> None:
    assert parse_address("192.0.2.1:8080") == ipaddress.ip_address("192.0.2.1")
    assert parse_address("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_address("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert parse_address(" 192.0.2.1 ") == ipaddress.ip_address("192.0.2.1")
    assert who("::ffff:127.0.0.1", "198.51.100.1") == "198.51.100.1"  # dual-stack listener


def test_no_trusted_proxies_trusts_nobody_and_a_unix_socket_peer_has_no_address() -> None:
    nobody = TrustedProxies(parse_networks(""))
    assert who("127.0.0.1", "198.51.100.1", trusted=nobody) == "127.0.0.1"
    assert who(None, "198.51.100.1") is None
    assert who("", "198.51.100.1") is None


def test_default_trusted_proxies_are_remote_ip_valves_internal_proxies() -> None:
    networks = {str(network) for network in TRUSTED.networks}
    assert networks == {"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                        "192.168.0.0/16", "169.254.0.0/16", "fc00::/7"}
    assert not TRUSTED.trusts_peer("172.32.0.1") and TRUSTED.trusts_peer("fd00::1")


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.0/33", "bad network '10.0.0.0/33'"),
    ("10.0.0.1/8", "has host bits set"),
    ("localhost", "bad network 'localhost'"),
    ("10.0.0.0/8,,::1", "empty entry"),
])
def test_bad_networks_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_networks(text)
