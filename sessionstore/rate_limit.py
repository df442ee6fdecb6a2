"""Per-client token buckets for new sessions (pure: the time is passed in, in seconds).

Each client has a bucket holding at most `burst` tokens, refilled at `rate` per second;
storing a new session takes one token, and a client with none is told how long until it has
one. A client is its address; IPv6 clients share the bucket of their /64 (one subscriber's
network: whoever holds it has 2**64 addresses to rotate through). The table keeps at most
`max_clients` buckets; when it is full, the bucket used least recently goes (its client
starts again with a full bucket, which an idle client would have had anyway).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from .client_address import IPAddress

MAX_CLIENTS = 10_000
_UNKNOWN_CLIENT = "unknown"  # no IP address at all (a Unix socket peer): one shared bucket


def client_key(address: IPAddress | None) -> str:
    """The bucket a client address counts against."""
    if address is None:
        return _UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class CreationRateLimit:
    """Token buckets by client, least recently used first."""

    def __init__(self, *, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate > 0, burst >= 1 and max_clients >= 1 are needed")
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # [tokens, at]

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: IPAddress | None, now: float) -> float:
        """Take a token for `address`: 0.0 when it had one, else the seconds until it will."""
        key = client_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now]
        else:
            self._buckets.move_to_end(key)
            # max(): a clock stepped back never drains a bucket
            bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.rate
