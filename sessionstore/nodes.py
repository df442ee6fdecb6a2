"""The memcached node list, failover nodes, and dead-node tracking (pure, clock injected).

A node that fails is dead for `retry_interval` seconds and skipped without waiting; after that
it is back in rotation and the next operation on it is the probe: success keeps it, failure
marks it dead again.

The list is either static ("n1:host:port,...", in configuration order) or discovered
("dns:NAME:PORT": nodes join and leave at run time, kept sorted by id so that every app server
computes the same order, hence the same `bak:` placement). New sessions go round-robin over
the alive non-failover nodes, so the spread is even; an existing session stays on the node
its id names while that node is alive and listed, so a node joining moves nothing and a node
leaving (or dying) moves only the sessions that named it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NodeListError

_NODE_ID_RE = re.compile(r"[A-Za-z0-9_]{1,16}")
_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
DNS_PREFIX = "dns:"
# The node id of sessions created while no node is known (a discovered list still empty):
# never a derived id (those are digits and "_", or "h" + hex), so it never names a real node.
NO_NODE = "none"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    id: str
    host: str
    port: int
    alive: bool
    failover: bool


@dataclass(frozen=True, slots=True)
class DnsNodes:
    """`memcached_nodes = "dns:NAME:PORT"`: every address NAME resolves to is a node."""

    name: str
    port: int


def parse_dns_nodes(text: str) -> DnsNodes | None:
    """The DNS name and port of "dns:NAME:PORT"; None when `text` is a static list."""
    if not text.strip().startswith(DNS_PREFIX):
        return None
    name, sep, port_text = text.strip().removeprefix(DNS_PREFIX).rpartition(":")
    if "," in text:
        raise NodeListError("is not one dns:name:port (it cannot be mixed with other nodes)")
    if not sep or not name:
        raise NodeListError("is not dns:name:port")
    if not _HOST_RE.fullmatch(name) or len(name) > 253:
        raise NodeListError(f"has a bad DNS name {name!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise NodeListError(f"has a bad port {port_text!r} (want 1-65535)")
    return DnsNodes(name, int(port_text))


def parse_node_list(text: str) -> tuple[NodeSpec, ...]:
    """Parse "n1:host:port,n2:host:port" (IPv6 hosts in brackets)."""
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip() or any(not entry for entry in entries):
        raise NodeListError("is not a list of id:host:port")
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for entry in entries:
        node_id, sep, rest = entry.partition(":")
        host, sep2, port_text = rest.rpartition(":")
        if not sep or not sep2 or not node_id or not host:
            raise NodeListError(f"is not id:host:port ({entry!r})" if len(entries) > 1
                                else "is not id:host:port")
        if not _NODE_ID_RE.fullmatch(node_id):
            raise NodeListError(f"has a bad node id {node_id!r} (want [A-Za-z0-9_]{{1,16}})")
        if node_id in seen:
            raise NodeListError(f"has the node id {node_id!r} twice")
        if not (_HOST_RE.fullmatch(host) or _IPV6_RE.fullmatch(host)) or len(host) > 253:
            raise NodeListError(f"has a bad host {host!r}")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise NodeListError(f"has a bad port {port_text!r} (want 1-65535)")
        seen.add(node_id)
        nodes.append(NodeSpec(node_id, host.strip("[]"), int(port_text)))
    return tuple(nodes)


def parse_failover_nodes(text: str, nodes: Sequence[NodeSpec]) -> frozenset[str]:
    """Parse "n1" or "n1,n2" against the node list; not every node may be a failover node."""
    if not text.strip():
        return frozenset()
    ids = [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]
    known = {node.id for node in nodes}
    for node_id in ids:
        if node_id not in known:
            raise NodeListError(f"names {node_id!r}, which is not in memcached_nodes")
    failover = frozenset(ids)
    if failover >= known:
        raise NodeListError("makes every memcached node a failover node")
    return failover


class NodeTracker:
    """Which nodes are alive, and where a session goes. Times are passed in (seconds).

    `discovered=True`: nodes `join` and `leave` at run time and are kept sorted by id.
    """

    def __init__(self, nodes: Sequence[NodeSpec], failover: frozenset[str],
                 retry_interval: float, *, discovered: bool = False) -> None:
        self.failover = failover
        self.retry_interval = retry_interval
        self.discovered = discovered
        self._dead_until: dict[str, float] = {}
        self._next_new = 0
        self._set_nodes(sorted(nodes, key=_node_id) if discovered else nodes)

    def _set_nodes(self, nodes: Sequence[NodeSpec]) -> None:
        self.nodes = tuple(nodes)
        self._ids = tuple(node.id for node in self.nodes)
        self._known = frozenset(self._ids)
        self._regular = tuple(i for i in self._ids if i not in self.failover)
        self._failover_ordered = tuple(i for i in self._ids if i in self.failover)

    def join(self, node: NodeSpec) -> None:
        """A discovered node enters the rotation (alive); its place in the order is its id's."""
        if not self.discovered:
            raise ValueError("a static node list does not change")
        if node.id not in self._known:
            self._set_nodes(sorted((*self.nodes, node), key=_node_id))
        self._dead_until.pop(node.id, None)

    def leave(self, node_id: str) -> None:
        """A discovered node is drained: unknown from now on, so nothing new goes there and
        sessions naming it are relocated on their next request, as for a dead node."""
        if not self.discovered:
            raise ValueError("a static node list does not change")
        self._set_nodes([node for node in self.nodes if node.id != node_id])
        self._dead_until.pop(node_id, None)

    def knows(self, node_id: str) -> bool:
        return node_id in self._known

    def is_alive(self, node_id: str, now: float) -> bool:
        until = self._dead_until.get(node_id)
        if until is None:
            return node_id in self._known
        if now >= until:
            del self._dead_until[node_id]  # interval over: the next operation probes it
            return True
        return False

    def any_alive(self, now: float) -> bool:
        return any(self.is_alive(node_id, now) for node_id in self._ids)

    def mark_dead(self, node_id: str, now: float) -> bool:
        """Mark the node dead; True when it was alive until now (a new failure)."""
        if node_id not in self._known:
            return False  # drained meanwhile: nothing to track
        was_alive = node_id not in self._dead_until
        self._dead_until[node_id] = now + self.retry_interval
        return was_alive

    def mark_alive(self, node_id: str) -> None:
        self._dead_until.pop(node_id, None)

    def choose_for_new(self, now: float) -> str:
        """Round-robin over alive regular nodes; failover nodes only when none is alive.

        With every node dead, a regular node is still returned (the session lives in memory
        and its backup is retried there or relocated on a later request); with no node at
        all (a discovered list still empty), NO_NODE.
        """
        if not self._regular:
            return NO_NODE
        for group in (self._regular, self._failover_ordered):
            count = len(group)
            for step in range(count):
                candidate = group[(self._next_new + step) % count]
                if self.is_alive(candidate, now):
                    self._next_new = (self._next_new + step + 1) % count
                    return candidate
        node = self._regular[self._next_new % len(self._regular)]
        self._next_new = (self._next_new + 1) % len(self._regular)
        return node

    def home_for(self, node_id: str, now: float) -> str:
        """Where an existing session should be backed up: its node if that is alive and not a
        failover node of this server (or no regular node is alive), else a new choice."""
        if not self._dead_until and node_id not in self.failover and node_id in self._known:
            return node_id  # the common case: every node alive
        known = node_id in self._known
        if known and self.is_alive(node_id, now):
            if node_id not in self.failover:
                return node_id
            if not any(self.is_alive(regular, now) for regular in self._regular):
                return node_id
        choice = self.choose_for_new(now)
        if choice == NO_NODE or (known and not self.is_alive(choice, now)):
            return node_id  # every node is dead (or none listed): moving would only churn the id
        return choice

    def backup_nodes_after(self, node_id: str, now: float) -> list[str]:
        """Alive nodes after `node_id` in list order (cyclic), for the non-sticky `bak:` copy.

        For a node this server does not list, a discovered list starts where the id would
        sort (where the `bak:` copy went when the node was listed); a static list tries all."""
        count = len(self._ids)
        if node_id in self._known:
            start = self._ids.index(node_id)
            ordered = [self._ids[(start + step) % count] for step in range(1, count)]
        elif self.discovered:
            start = bisect.bisect(self._ids, node_id)
            ordered = [self._ids[(start + step) % count] for step in range(count)]
        else:
            ordered = list(self._ids)
        return [i for i in ordered if self.is_alive(i, now)]

    def statuses(self, now: float) -> list[NodeStatus]:
        return [
            NodeStatus(node.id, node.host, node.port, self.is_alive(node.id, now),
                       node.id in self.failover)
            for node in self.nodes
        ]


def _node_id(node: NodeSpec) -> str:
    return node.id
