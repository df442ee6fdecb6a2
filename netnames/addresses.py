"""IP addresses as text: `host:port` with IPv6 in brackets, and the usable answers of a
resolver."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def address_text(host: str, port: int) -> str:
    """``10.0.0.5:8000``; an IPv6 address in brackets, ``[fd00::5]:8000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def usable_addresses(addresses: Iterable[str]) -> list[str]:
    """The distinct IP addresses among a resolver's answers, in its order.

    Anything that is not an IP address is dropped; an IPv6 scope is kept out of the
    comparison by normalising through `ipaddress` (``::ffff:10.0.0.5`` is 10.0.0.5).
    """
    seen: dict[str, None] = {}
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        seen.setdefault(str(ip), None)
    return list(seen)
