"""DNS discovery of memcached nodes ("dns:NAME:PORT"), the way nginx's `resolver ... valid=`
and HAProxy's `server-template` do it: the name is resolved at start-up and then every
`resolver_valid` seconds (the event loop's getaddrinfo, IPv4 and IPv6, under a timeout).

An address that appears becomes a node once it answers `version` (retried every round until
it does); a node whose address disappears is drained (see NodeTracker.leave). A name that
does not resolve, resolves to nothing, or whose resolver fails or hangs changes nothing: the
node list stays as it was, one log line says so (once per change of the problem, not every
round: netnames.NameWatch) and `resolver_failures` counts each failed round. The pure part is
in discovery.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping

from netnames import NameWatch, Resolver, getaddrinfo_resolver
from netnames.watch import RESOLVE_TIMEOUT

from .client import MemcachedClient
from .discovery import NodeChange, diff_nodes, nodes_for_addresses
from .errors import MemcachedError
from .nodes import DnsNodes, NodeSpec, NodeTracker
from .stats import Stats

log = logging.getLogger("sessionstore")

__all__ = ("NodeDiscovery", "Resolver", "getaddrinfo_resolver")


class NodeDiscovery:
    """Keeps the tracker's node list and the memcached clients in step with DNS."""

    def __init__(self, *, dns: DnsNodes, tracker: NodeTracker,
                 clients: MutableMapping[str, MemcachedClient], stats: Stats,
                 operation_timeout: float, interval: float,
                 resolver: Resolver = getaddrinfo_resolver,
                 resolve_timeout: float = RESOLVE_TIMEOUT) -> None:
        self.dns = dns
        self.tracker = tracker
        self.clients = clients
        self.stats = stats
        self.operation_timeout = operation_timeout
        self.interval = interval
        self.watch = NameWatch(dns.name, resolver=resolver, timeout=resolve_timeout,
                               on_problem=self._problem_found, on_recovered=self._recovered)
        self._round_problem: str | None = None  # the round failure logged last
        self._waiting: set[str] = set()  # appeared, no answer to `version` yet (logged once)
        self._lock = asyncio.Lock()

    @property
    def label(self) -> str:
        return f"dns:{self.dns.name}:{self.dns.port}"

    async def run(self) -> None:
        """Refresh every `interval` seconds until cancelled; nothing in a round stops it."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # a bug must not end discovery for good
                self.stats.resolver_failures += 1
                problem = f"discovery round failed ({type(exc).__name__}: {exc})"
                if problem != self._round_problem:  # once per change, as resolutions are
                    self._round_problem = problem
                    log.warning("memcached_nodes %s: %s", self.label, problem)

    async def refresh(self) -> NodeChange | None:
        """One round: resolve, drain the nodes that left, add the new ones that answer.
        Returns what changed, or None when the name did not resolve (nothing changed)."""
        async with self._lock:
            resolved = await self._resolve()
            if resolved is None:
                return None
            change = diff_nodes(self.tracker.nodes, resolved)
            self._waiting.intersection_update(resolved)
            for node in change.left:
                await self._drain(node)
            answered = await asyncio.gather(*(self._probe(node) for node in change.joined))
            joined = tuple(node for node, ok in zip(change.joined, answered, strict=True) if ok)
            return NodeChange(joined, change.left)

    async def _resolve(self) -> dict[str, NodeSpec] | None:
        addresses = await self.watch.resolve()
        if addresses is None:
            self.stats.resolver_failures += 1
            return None
        self._round_problem = None
        return nodes_for_addresses(addresses, self.dns.port)

    def _problem_found(self, problem: str) -> None:
        listed = len(self.tracker.nodes)
        log.warning("memcached_nodes %s: %s; keeping the %d node%s listed%s", self.label,
                    problem, listed, "" if listed == 1 else "s",
                    "" if listed else " (no backups until it resolves)")

    def _recovered(self, addresses: list[str]) -> None:
        log.info("memcached_nodes %s resolves again: %s", self.label, ", ".join(addresses))

    async def _probe(self, node: NodeSpec) -> bool:
        """Join `node` if it answers `version` within operation_timeout."""
        client = MemcachedClient(node=node.id, host=node.host, port=node.port,
                                 operation_timeout=self.operation_timeout)
        try:
            version = await client.version()
        except MemcachedError as exc:
            await client.close()
            if node.id not in self._waiting:
                self._waiting.add(node.id)
                log.warning("memcached node %s (%s:%d) from %s does not answer yet, not used "
                            "until it does: %s", node.id, node.host, node.port, self.label,
                            exc.reason)
            return False
        except BaseException:
            await client.close()
            raise
        self._waiting.discard(node.id)
        self.clients[node.id] = client
        self.tracker.join(node)
        self.stats.nodes_discovered += 1
        log.info("memcached node %s (%s:%d, memcached %s) joined from %s", node.id, node.host,
                 node.port, version, self.label)
        return True

    async def _drain(self, node: NodeSpec) -> None:
        self.tracker.leave(node.id)
        self.stats.nodes_drained += 1
        client = self.clients.pop(node.id, None)
        if client is not None:
            await client.close()
        log.warning("memcached node %s (%s:%d) is gone from %s: drained, its sessions move on "
                    "their next request", node.id, node.host, node.port, self.label)
