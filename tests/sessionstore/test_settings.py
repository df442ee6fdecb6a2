"""Settings and node list validation (item 1): pure, no sockets."""

from __future__ import annotations

import pytest

from sessionstore import SessionStoreSettings, SettingsError
from sessionstore.nodes import NodeSpec

BASE = {"jvm_route": "app1", "memcached_nodes": "n1:localhost:11211,n2:10.0.0.2:11212"}


def settings(**overrides: object) -> SessionStoreSettings:
    return SessionStoreSettings.from_mapping({**BASE, **overrides})


def test_defaults_and_node_list() -> None:
    s = settings()
    assert s.sticky and s.locking_mode == "none" and s.transcoder == "json"
    assert s.operation_timeout == 0.5 and s.session_backup_timeout == 1.0
    assert s.max_inactive_interval == 1800 and s.session_cookie_name == "JSESSIONID"
    assert s.nodes == (NodeSpec("n1", "localhost", 11211), NodeSpec("n2", "10.0.0.2", 11212))
    assert s.failover == frozenset()


def test_environment_strings_are_parsed_strictly() -> None:
    s = settings(sticky="false", session_backup_async="TRUE", operation_timeout="0.25",
                 max_session_size="2048", locking_mode="auto", unknown_key="ignored")
    assert s.sticky is False and s.session_backup_async is True
    assert s.operation_timeout == 0.25 and s.max_session_size == 2048


def test_toml_native_types_and_ipv6() -> None:
    s = settings(memcached_nodes="n1:[::1]:11211,n2:host2:11212", failover_nodes="n1",
                 operation_timeout=1, node_retry_interval=2.5)
    assert s.nodes[0] == NodeSpec("n1", "::1", 11211)
    assert s.failover == frozenset({"n1"})
    assert s.operation_timeout == 1.0


@pytest.mark.parametrize(("key", "value", "message"), [
    ("memcached_nodes", "n1:localhost", "memcached_nodes: 'n1:localhost' is not id:host:port"),
    ("memcached_nodes", "", "is not a list"),
    ("memcached_nodes", "n1:a:1,n1:b:2", "node id 'n1' twice"),
    ("memcached_nodes", "n1:bad_host!:1", "bad host"),
    ("memcached_nodes", "n1:host:0", "bad port '0'"),
    ("memcached_nodes", "n1:host:70000", "bad port"),
    ("memcached_nodes", "n1:host:http", "bad port"),
    ("memcached_nodes", "n-1:host:1", "bad node id"),
    ("memcached_nodes", "n1:host:1,,n2:host:2", "is not a list"),
    ("failover_nodes", "n3", "'n3', which is not in memcached_nodes"),
    ("failover_nodes", "n1,n2", "every memcached node a failover node"),
    ("jvm_route", "app 1", "jvm_route: 'app 1'"),
    ("sticky", "maybe", "sticky: 'maybe' is not a boolean"),
    ("operation_timeout", "fast", "operation_timeout: 'fast' is not a number"),
    ("operation_timeout", "-1", "is not a duration"),
    ("operation_timeout", "nan", "not a finite number"),
    ("lock_timeout", True, "is not a number"),
    ("locking_mode", "sometimes", "is not none, all, auto or uriPattern"),
    ("locking_mode", "uriPattern:(", "bad regular expression"),
    ("request_uri_ignore_pattern", "[", "is not a regular expression"),
    ("storage_key_prefix", "a b", "storage_key_prefix"),
    ("transcoder", "pickle", "is not one of json, msgpack"),
    ("max_session_size", "1.5", "is not an integer"),
    ("max_session_size", 10, "is not an integer 1024"),
    ("max_session_size", "--5", "is not an integer"),
    ("max_session_size", "\u00b2", "is not an integer"),
    ("max_active_sessions", 0, "is not -1 (no cap) or an integer 1..1000000000"),
    ("max_active_sessions", "-2", "is not -1 (no cap)"),
    ("max_active_sessions", "lots", "is not an integer"),
    ("session_create_rate", "-1", "is not a rate per second 0..1000000 (0: no limit)"),
    ("session_create_rate", "inf", "not a finite number"),
    ("session_create_rate", True, "is not a number"),
    ("session_create_burst", "0", "is not an integer 1..1000000"),
    ("session_create_burst", 2.5, "is not an integer"),
    ("trusted_proxies", "10.0.0.0/33", "trusted_proxies: '10.0.0.0/33' has a bad network"),
    ("trusted_proxies", "10.0.0.1/8", "has host bits set"),
    ("trusted_proxies", ["10.0.0.0/8"], "is not a string"),
])
def test_bad_values_name_key_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings(**{key: value})
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{key}: ")
    assert "\n" not in str(caught.value)
    assert caught.value.key == key


def test_session_bounds_defaults_and_environment_strings() -> None:
    s = settings()
    assert s.max_active_sessions == 100_000 and s.max_sessions_in_memory == 100_000
    assert s.session_create_rate == 20.0 and s.session_create_burst == 100
    assert [str(n) for n in s.trusted_networks] == [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "169.254.0.0/16", "fc00::/7"]
    s = settings(max_active_sessions="-1", session_create_rate="0", session_create_burst="5",
                 trusted_proxies="")
    assert s.max_active_sessions == -1 and s.max_sessions_in_memory is None
    assert s.session_create_rate == 0.0 and s.session_create_burst == 5
    assert s.trusted_networks == ()
    assert settings(trusted_proxies="None").trusted_networks == ()
    s = settings(trusted_proxies="10.9.0.0/16 , 2001:db8::1")
    assert [str(n) for n in s.trusted_networks] == ["10.9.0.0/16", "2001:db8::1/128"]


def test_failover_nodes_with_non_sticky_is_an_error() -> None:
    with pytest.raises(SettingsError, match="failover_nodes: 'n1' is set but sticky = false"):
        settings(failover_nodes="n1", sticky="false")


def test_required_keys() -> None:
    with pytest.raises(SettingsError, match="jvm_route: None is required"):
        SessionStoreSettings.from_mapping({"memcached_nodes": "n1:h:1"})
    with pytest.raises(SettingsError, match="memcached_nodes"):
        SessionStoreSettings.from_mapping({"jvm_route": "app1"})
