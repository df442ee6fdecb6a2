"""Who the client is: the peer's address, or the one a trusted proxy in front of us names.

A request whose peer is inside `trusted_proxies` (Tomcat RemoteIpValve's internalProxies,
by default loopback and the private ranges) comes from the address that proxy put in
`X-Real-IP`, else from the last `X-Forwarded-For` entry (the one the proxy appended: the
entries before it are whatever the client sent). From any other peer those headers are the
client's own words and are ignored. A header that does not hold one IP address is ignored
too, so garbage falls back to the peer.

Pure: no aiohttp, no I/O; the caller hands in the peer and the header values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
                           "169.254.0.0/16, fc00::/7")
_MAX_ENTRY_LENGTH = 64  # longer than any IPv6 address with brackets, scope and port


def parse_networks(text: str) -> tuple[Network, ...]:
    """"10.0.0.0/8, ::1" -> networks (a bare address is a network of one); ValueError names
    the bad entry."""
    networks: list[Network] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            if text.strip():
                raise ValueError("has an empty entry")
            continue
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(f"has a bad network {entry!r} ({exc})") from None
    return tuple(networks)


def parse_address(text: str | None) -> IPAddress | None:
    """One IP address as a header or a peer gives it ("192.0.2.1", "192.0.2.1:80",
    "[2001:db8::1]:443", IPv4-mapped IPv6); None for anything else."""
    if not text:
        return None
    text = text.strip()
    if len(text) > _MAX_ENTRY_LENGTH:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The peers allowed to name the client; answers are cached per peer string."""

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        self.trusts_peer = lru_cache(maxsize=1024)(self._trusts_peer)

    def _trusts_peer(self, peer: str) -> bool:
        address = parse_address(peer)
        return address is not None and any(address in network for network in self.networks)


def client_address(peer: str | None, real_ip: str | None, forwarded_for: Sequence[str],
                   trusted: TrustedProxies) -> IPAddress | None:
    """The client's address; None when not even the peer is an IP address (a Unix socket).

    `forwarded_for` holds every X-Forwarded-For header line, in order."""
    if peer and trusted.networks and trusted.trusts_peer(peer):
        named = parse_address(real_ip)
        if named is None and forwarded_for:
            named = parse_address(forwarded_for[-1].rpartition(",")[2])
        if named is not None:
            return named
    return parse_address(peer)
