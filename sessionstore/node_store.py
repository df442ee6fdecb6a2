"""NodeStore: the memcached clients by node id, and the dead-node bookkeeping around them.

It is the only caller of `MemcachedClient` (whose operations are each bounded by
operation_timeout and discard their connection on any unclean exit): a node marked dead fails
at once, without I/O, and a node whose operation fails with NodeFailureError is marked dead
for node_retry_interval. Everything that talks to memcached (backups, locks, the evictions
watch, start-up probes) goes through `call`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from .client import MemcachedClient
from .errors import NodeFailureError
from .nodes import NodeTracker
from .stats import Stats

log = logging.getLogger("sessionstore")

_T = TypeVar("_T")


class NodeStore:
    """Memcached clients by node id, plus the dead-node bookkeeping around every call."""

    def __init__(self, *, clients: Mapping[str, MemcachedClient], tracker: NodeTracker,
                 stats: Stats, clock: Callable[[], float]) -> None:
        self.clients = clients
        self.tracker = tracker
        self.stats = stats
        self.clock = clock

    def alive(self, node: str) -> bool:
        return self.tracker.is_alive(node, self.clock())

    async def call(self, node: str, operation: str,
                   run: Callable[[MemcachedClient], Awaitable[_T]]) -> _T:
        """Run one operation on `node`; a dead node fails at once, without I/O."""
        client = self.clients.get(node)
        if client is None or not self.tracker.is_alive(node, self.clock()):
            raise NodeFailureError(node, operation, "node is marked dead")
        try:
            return await run(client)
        except NodeFailureError as exc:
            if self.tracker.mark_dead(node, self.clock()):
                self.stats.node_failures += 1
                log.warning("memcached node %s marked dead for %.1fs: %s", node,
                            self.tracker.retry_interval, exc)
            raise

    async def close(self) -> None:
        """Close every client (idempotent)."""
        for client in list(self.clients.values()):
            await client.close()
