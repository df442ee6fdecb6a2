"""Discovered memcached nodes, the pure part: node ids derived from addresses, and the diff
of a resolved address set against the current node list.

A node id appears in session ids, so every app server must derive the same id from the same
address, without talking to the others:
- IPv4: the dotted quad with "_" for ".": 10.0.1.5 -> ``10_0_1_5`` (at most 15 characters);
- IPv6: ``h`` + the 12 hex characters of BLAKE2b with a 6-byte (48-bit) digest over the 16
  packed address bytes, ``hashlib.blake2b(packed, digest_size=6)``: ``::1`` ->
  ``h90ad9a0dfd78``. An IPv4-mapped IPv6 address counts as its IPv4 address; a scope
  (``%eth0``) is not part of the id.
Both fit the node id pattern [A-Za-z0-9_]{1,16} and never equal a static-looking "n1" or
NO_NODE. All nodes of one name share the port given in "dns:NAME:PORT".
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .nodes import NodeSpec

_IPV6_HASH_HEX = 12


def node_id_for_address(address: str) -> str:
    """The node id of an IP address (raises ValueError for anything that is not one)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip).replace(".", "_")
    digest = hashlib.blake2b(ip.packed, digest_size=_IPV6_HASH_HEX // 2).hexdigest()
    return "h" + digest


def nodes_for_addresses(addresses: Iterable[str], port: int) -> dict[str, NodeSpec]:
    """One node per distinct address (by id), sorted by id; unusable strings are skipped."""
    nodes: dict[str, NodeSpec] = {}
    for address in addresses:
        try:
            node_id = node_id_for_address(address)
        except ValueError:
            continue
        nodes.setdefault(node_id, NodeSpec(node_id, address, port))
    return dict(sorted(nodes.items()))


@dataclass(frozen=True, slots=True)
class NodeChange:
    """What one resolution changes: nodes to add (after a health check) and nodes to drain."""

    joined: tuple[NodeSpec, ...]
    left: tuple[NodeSpec, ...]


def diff_nodes(current: Iterable[NodeSpec], resolved: dict[str, NodeSpec]) -> NodeChange:
    """Compare the listed nodes with the resolved ones, by id; both sides in id order."""
    listed = {node.id: node for node in current}
    joined = tuple(node for node_id, node in sorted(resolved.items()) if node_id not in listed)
    left = tuple(node for node_id, node in sorted(listed.items()) if node_id not in resolved)
    return NodeChange(joined, left)
