"""DNS node lists, the pure part: "dns:NAME:PORT" settings, node ids derived from addresses
(the same on every app server), and the diff of resolved addresses against the node list."""

from __future__ import annotations

import re

import pytest

from sessionstore import SessionStoreSettings, SettingsError
from sessionstore.discovery import diff_nodes, node_id_for_address, nodes_for_addresses
from sessionstore.ids import NODE_ID_PATTERN, new_session_id, parse_session_id
from sessionstore.nodes import NO_NODE, DnsNodes, NodeSpec


def settings(**overrides: object) -> SessionStoreSettings:
    return SessionStoreSettings.from_mapping(
        {"jvm_route": "app1", "memcached_nodes": "dns:tasks.memcached:11211", **overrides})


def test_dns_node_list_and_resolver_valid() -> None:
    s = settings()
    assert s.discovery == DnsNodes("tasks.memcached", 11211)
    assert s.nodes == () and s.failover == frozenset()
    assert s.resolver_valid == 5.0
    assert settings(resolver_valid="0.25").resolver_valid == 0.25  # environment string
    assert settings(resolver_valid=30).resolver_valid == 30.0  # TOML integer
    static = settings(memcached_nodes="n1:localhost:11211")
    assert static.discovery is None and static.nodes == (NodeSpec("n1", "localhost", 11211),)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("memcached_nodes", "dns:", "memcached_nodes: 'dns:' is not dns:name:port"),
    ("memcached_nodes", "dns:tasks.memcached", "is not dns:name:port"),
    ("memcached_nodes", "dns:bad_name!:11211", "bad DNS name 'bad_name!'"),
    ("memcached_nodes", "dns:[::1]:11211", "bad DNS name"),
    ("memcached_nodes", "dns:memcached:0", "bad port '0'"),
    ("memcached_nodes", "dns:memcached:http", "bad port 'http'"),
    ("memcached_nodes", "dns:a:1,n1:b:2", "is not one dns:name:port (it cannot be mixed"),
    ("resolver_valid", "0", "resolver_valid: 0.0 is not a duration in seconds"),
    ("resolver_valid", "soon", "resolver_valid: 'soon' is not a number"),
    ("resolver_valid", "inf", "not a finite number"),
    ("resolver_valid", False, "is not a number"),
    ("failover_nodes", "n1", "failover_nodes: 'n1' is set but memcached_nodes is a dns: name"),
])
def test_bad_values_name_key_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings(**{key: value})
    assert message in str(caught.value)
    assert caught.value.key == key and "\n" not in str(caught.value)


@pytest.mark.parametrize(("address", "node_id"), [
    ("10.0.1.5", "10_0_1_5"),
    ("255.255.255.255", "255_255_255_255"),
    ("::ffff:10.0.1.5", "10_0_1_5"),  # IPv4-mapped: the same host, the same id
    # "h" + 12 hex of BLAKE2b (6-byte digest) over the 16 packed bytes: fixed for good,
    # since ids already issued name it.
    ("::1", "h90ad9a0dfd78"),
    ("fd00::5", "hef2240833389"),
])
def test_node_ids_derive_from_the_address(address: str, node_id: str) -> None:
    assert node_id_for_address(address) == node_id


def test_ipv6_ids_are_short_stable_and_fit_session_ids() -> None:
    one = node_id_for_address("fd00::5")
    assert one == node_id_for_address("fd00:0:0:0:0:0:0:5")  # any spelling, the same id
    assert one == node_id_for_address("fd00::5%eth0")  # the scope is not the address
    assert one != node_id_for_address("fd00::6")
    assert re.fullmatch(r"h[0-9a-f]{12}", one)
    for node_id in (one, node_id_for_address("255.255.255.255"), NO_NODE):
        assert re.fullmatch(NODE_ID_PATTERN, node_id)
        sid = new_session_id(node_id, "app1")
        assert parse_session_id(sid.text) == sid


@pytest.mark.parametrize("text", ["tasks.memcached", "", "10.0.1", "1.2.3.4:11211"])
def test_anything_but_an_ip_address_has_no_node_id(text: str) -> None:
    with pytest.raises(ValueError):
        node_id_for_address(text)


def test_resolved_addresses_become_nodes_sorted_by_id() -> None:
    nodes = nodes_for_addresses(["10.0.1.9", "10.0.1.10", "10.0.1.9", "junk", "::ffff:10.0.1.9"],
                                11211)
    assert nodes == {"10_0_1_10": NodeSpec("10_0_1_10", "10.0.1.10", 11211),
                     "10_0_1_9": NodeSpec("10_0_1_9", "10.0.1.9", 11211)}
    assert list(nodes) == ["10_0_1_10", "10_0_1_9"]


def test_diff_names_the_nodes_that_join_and_leave() -> None:
    listed = nodes_for_addresses(["10.0.1.1", "10.0.1.2", "10.0.1.3"], 11211)
    resolved = nodes_for_addresses(["10.0.1.3", "10.0.1.4", "10.0.1.1"], 11211)
    change = diff_nodes(listed.values(), resolved)
    assert [node.id for node in change.joined] == ["10_0_1_4"]
    assert [node.id for node in change.left] == ["10_0_1_2"]
    unchanged = diff_nodes(listed.values(), listed)
    assert unchanged.joined == unchanged.left == ()
    everything = diff_nodes([], resolved)
    assert [node.id for node in everything.joined] == ["10_0_1_1", "10_0_1_3", "10_0_1_4"]
