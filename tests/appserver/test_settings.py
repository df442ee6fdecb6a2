"""Settings from a TOML member table or from the environment; one clear line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from appserver import AppServerSettings, ConfigError
from sessionstore import SettingsError

TOPOLOGY = """
[memcached.n1]
listen = "127.0.0.1:11211"

[appserver]
memcached_nodes = "n1:127.0.0.1:11211,n2:127.0.0.1:11212"
sticky = true
operation_timeout = 0.25

[appserver.app1]
listen = "127.0.0.1:8081"
host = "host1"
jvm_route = "app1"
failover_nodes = "n1"
client_max_body_size = "512k"

[appserver.app2]
listen = "127.0.0.1:8082"
jvm_route = "app2"
operation_timeout = 1
"""


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(TOPOLOGY)
    return path


def test_a_member_is_the_role_defaults_merged_with_its_table(topology: Path) -> None:
    app1 = AppServerSettings.from_toml(topology, "app1")
    assert (app1.listen_host, app1.listen_port, app1.jvm_route) == ("127.0.0.1", 8081, "app1")
    assert app1.client_max_body_size == 512 * 1024
    assert app1.session.failover_nodes == "n1"
    assert app1.session.operation_timeout == 0.25
    app2 = AppServerSettings.from_toml(topology, "app2")
    assert app2.session.operation_timeout == 1.0  # the member overrides the default
    assert app2.client_max_body_size == 1024 * 1024
    assert app2.shutdown_timeout == 10.0


def test_the_repository_topology_parses() -> None:
    path = Path(__file__).parents[2] / "cluster.toml"
    for name, port in (("app1", 8081), ("app2", 8082)):
        assert AppServerSettings.from_toml(path, name).listen_port == port


def test_environment_variables_are_the_upper_case_keys() -> None:
    settings = AppServerSettings.from_environ(
        {
            "LISTEN": "0.0.0.0:8080",
            "JVM_ROUTE": "app2",
            "MEMCACHED_NODES": "n1:memcached1:11211,n2:memcached2:11211",
            "FAILOVER_NODES": "n2",
            "STICKY": "true",
            "SESSION_BACKUP_ASYNC": "true",
            "OPERATION_TIMEOUT": "0.2",
            "MAX_INACTIVE_INTERVAL": "600",
            "CLIENT_MAX_BODY_SIZE": "2m",
            "SHUTDOWN_TIMEOUT": "3",
            "PATH": "/usr/bin",  # the environment holds unrelated variables: not an error
            "HOST": "host2",  # cluster metadata, never read from the environment
            "ACCESS_LOG": "",  # empty counts as unset
        }
    )
    assert settings.listen == "0.0.0.0:8080"
    assert settings.jvm_route == "app2"
    assert settings.session.session_backup_async is True
    assert settings.session.max_inactive_interval == 600.0
    assert settings.client_max_body_size == 2 * 1024 * 1024
    assert settings.shutdown_timeout == 3.0
    assert settings.access_log is True  # nginx's and Tomcat's default
    assert settings.log_format == "text"


def test_ipv6_listen_address() -> None:
    settings = AppServerSettings.from_mapping(
        {"listen": "[::1]:8081", "jvm_route": "a", "memcached_nodes": "n1:[::1]:11211"}
    )
    assert (settings.listen_host, settings.listen_port) == ("::1", 8081)
    assert settings.listen == "[::1]:8081"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listen": None}, "listen: is required"),
        ({"listen": "8081"}, "listen: '8081' is not host:port"),
        ({"listen": "h:99999"}, "listen: 'h:99999' is not host:port"),
        ({"client_max_body_size": "lots"}, "client_max_body_size: 'lots' is not a positive size"),
        ({"shutdown_timeout": "0"}, "shutdown_timeout: '0' is not a positive number of seconds"),
        ({"max_session_attributes": -1}, "max_session_attributes: -1 is not a positive integer"),
        ({"access_log": "maybe"}, "access_log: 'maybe' is not a boolean"),
        ({"log_format": "xml"}, "log_format: 'xml' is not \"text\" or \"json\""),
        ({"memcached_nodez": "n1:h:1"}, "memcached_nodez: is not a setting the app server knows"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(values: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "listen": "127.0.0.1:8081",
        "jvm_route": "a",
        "memcached_nodes": "n1:h:1",
    }
    with pytest.raises(ConfigError) as caught:
        AppServerSettings.from_mapping(base | values)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_session_settings_errors_come_from_sessionstore_and_name_the_key() -> None:
    with pytest.raises(SettingsError, match="memcached_nodes"):
        AppServerSettings.from_mapping({"listen": "h:1", "jvm_route": "a", "memcached_nodes": "x"})


def test_an_unknown_member_names_the_known_ones(topology: Path) -> None:
    with pytest.raises(ConfigError, match=r"name: 'app3' is not .* \(members: app1, app2\)"):
        AppServerSettings.from_toml(topology, "app3")


def test_an_unknown_key_in_the_topology_is_an_error(topology: Path) -> None:
    topology.write_text(TOPOLOGY.replace('host = "host1"', 'hots = "host1"'))
    with pytest.raises(ConfigError, match="hots: is not a setting"):
        AppServerSettings.from_toml(topology, "app1")


def test_an_unreadable_or_broken_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        AppServerSettings.from_toml(tmp_path / "missing.toml", "app1")
    broken = tmp_path / "broken.toml"
    broken.write_text("[appserver\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        AppServerSettings.from_toml(broken, "app1")
