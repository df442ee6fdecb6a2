"""Per-client token buckets for new sessions (pure, time passed in)."""

from __future__ import annotations

import ipaddress

import pytest

from sessionstore.rate_limit import CreationRateLimit, client_key

A = ipaddress.ip_address("203.0.113.7")
B = ipaddress.ip_address("203.0.113.8")


def test_a_burst_then_one_new_session_per_refill() -> None:
    limit = CreationRateLimit(rate=2.0, burst=3)
    assert [limit.take(A, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take(A, 100.0) == pytest.approx(0.5)  # one token takes 1 / rate
    assert limit.take(B, 100.0) == 0.0  # another client has its own bucket
    assert limit.take(A, 100.25) == pytest.approx(0.25)
    assert limit.take(A, 100.5) == 0.0
    assert limit.take(A, 1000.0) == 0.0  # refilled, but never above the burst
    assert [limit.take(A, 1000.0) for _ in range(3)][-1] > 0


def test_a_clock_stepping_back_never_drains_or_fills_a_bucket() -> None:
    limit = CreationRateLimit(rate=1.0, burst=1)
    assert limit.take(A, 100.0) == 0.0
    assert limit.take(A, 50.0) == pytest.approx(1.0)
    assert limit.take(A, 51.0) == 0.0


def test_ipv6_clients_share_their_slash_64() -> None:
    assert client_key(ipaddress.ip_address("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_key(A) == "203.0.113.7" and client_key(None) == "unknown"
    limit = CreationRateLimit(rate=1.0, burst=1)
    assert limit.take(ipaddress.ip_address("2001:db8:1:2::1"), 0.0) == 0.0
    assert limit.take(ipaddress.ip_address("2001:db8:1:2:ffff::9"), 0.0) > 0
    assert limit.take(ipaddress.ip_address("2001:db8:1:3::1"), 0.0) == 0.0


def test_the_table_is_bounded_least_recently_used_first() -> None:
    limit = CreationRateLimit(rate=1.0, burst=1, max_clients=100)
    for number in range(1000):
        limit.take(ipaddress.ip_address(f"198.51.{number // 256}.{number % 256}"), 0.0)
        limit.take(A, 0.0)  # A stays the most recently used: never dropped
    assert len(limit) == 100
    assert limit.take(A, 0.0) > 0


def test_nonsense_parameters_are_refused() -> None:
    for rate, burst in ((0.0, 1), (1.0, 0)):
        with pytest.raises(ValueError):
            CreationRateLimit(rate=rate, burst=burst)
