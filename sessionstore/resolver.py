"""DNS discovery of memcached nodes ("dns:NAME:PORT"), the way nginx's `resolver ... valid=`
and HAProxy's `server-template` do it: the name is resolved at start-up and then every
`resolver_valid` seconds (the event loop's getaddrinfo, IPv4 and IPv6, under a timeout).

An address that appears becomes a node once it answers `version` (retried every round until
it does); a node whose address disappears is drained (see NodeTracker.leave). A name that
does not resolve, resolves to nothing, or whose resolver fails or hangs changes nothing: the
node list stays as it was, one log line says so (once per change of the problem, not every
round) and `resolver_failures` counts each failed round. The pure part is in discovery.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence

from .client import MemcachedClient
from .discovery import NodeChange, diff_nodes, nodes_for_addresses
from .errors import MemcachedError
from .nodes import DnsNodes, NodeSpec, NodeTracker
from .stats import Stats

log = logging.getLogger("sessionstore")

Resolver = Callable[[str], Awaitable[Sequence[str]]]
"""name -> the IP addresses it resolves to right now (raises OSError when it does not)."""

RESOLVE_TIMEOUT = 5.0  # seconds one resolution may take (nginx's resolver_timeout is 30 s)


async def getaddrinfo_resolver(name: str) -> list[str]:
    """Every distinct IPv4 and IPv6 address of `name`, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
    addresses: dict[str, None] = {}
    for _family, _type, _proto, _canonname, sockaddr in infos:
        addresses.setdefault(str(sockaddr[0]), None)
    return list(addresses)


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
        self.resolver = resolver
        self.resolve_timeout = resolve_timeout
        self._problem: str | None = None  # the failure logged last; None while resolving
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
                self._failed(f"discovery round failed ({type(exc).__name__}: {exc})")

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
        try:
            async with asyncio.timeout(self.resolve_timeout):
                addresses = await self.resolver(self.dns.name)
        except TimeoutError:
            self._failed(f"no answer from the resolver within {self.resolve_timeout:g}s")
            return None
        except OSError as exc:  # socket.gaierror: NXDOMAIN, no data, resolver down
            self._failed(f"does not resolve ({exc.strerror or exc})")
            return None
        except Exception as exc:
            self._failed(f"resolver failed ({type(exc).__name__}: {exc})")
            return None
        resolved = nodes_for_addresses(addresses, self.dns.port)
        if not resolved:
            self._failed("resolves to no address")
            return None
        if self._problem is not None:
            log.info("memcached_nodes %s resolves again: %s", self.label,
                     ", ".join(node.host for node in resolved.values()))
            self._problem = None
        return resolved

    def _failed(self, problem: str) -> None:
        self.stats.resolver_failures += 1
        if problem != self._problem:
            self._problem = problem
            listed = len(self.tracker.nodes)
            log.warning("memcached_nodes %s: %r %s; keeping the %d node%s listed%s", self.label,
                        self.dns.name, problem, listed, "" if listed == 1 else "s",
                        "" if listed else " (no backups until it resolves)")

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
