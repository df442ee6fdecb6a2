"""docker-compose.yml read with the project's own configuration loaders, without Docker:
every environment parses, the cross-wise backup layout holds and the ports line up."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import pytest

from appserver.settings import AppServerSettings, known_keys
from proxy.settings import KNOWN_KEYS as PROXY_KEYS
from proxy.settings import ProxySettings, settings_from_environ

from .compose import HOST_LABEL, load_compose_file
from .engine import REPO, compose_command, run

APPS = ("app1", "app2")
MEMCACHED = ("memcached1", "memcached2")
MEMCACHED_PORT = 11211  # the memcached command gives flags only, never -p


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose_file()


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service["environment"]
    assert isinstance(env, dict), "environment as a mapping, one setting a line"
    return {str(key): str(value) for key, value in env.items()}


def app_settings(compose: dict[str, Any], name: str) -> AppServerSettings:
    env = environment(compose["services"][name])
    unknown = {key for key in env if key.lower() not in known_keys()}
    assert not unknown, f"{name}: variables the app server does not read: {unknown}"
    return AppServerSettings.from_environ(env)


def proxy_settings(compose: dict[str, Any]) -> ProxySettings:
    env = environment(compose["services"]["proxy"])
    unknown = {key for key in env if key.lower() not in PROXY_KEYS}
    assert not unknown, f"proxy: variables the proxy does not read: {unknown}"
    return settings_from_environ(env)


def host_of(compose: dict[str, Any], name: str) -> str:
    return str(compose["services"][name]["labels"][HOST_LABEL])


def healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:\d+/\S*?(?=['\"])", test)
    assert match, f"no http://127.0.0.1:PORT/PATH in {test!r}"
    return match[0]


def test_the_five_services_of_the_classic_topology(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"proxy", *APPS, *MEMCACHED}
    assert {host_of(compose, name) for name in (*APPS, *MEMCACHED)} == {"host1", "host2"}
    for name in APPS:
        assert host_of(compose, name) != host_of(compose, next(a for a in APPS if a != name))


def test_each_app_backs_up_to_the_other_host_and_fails_over_to_its_own(
    compose: dict[str, Any],
) -> None:
    for name in APPS:
        settings = app_settings(compose, name)
        assert settings.jvm_route == name, "the route is the service name the proxy uses"
        assert settings.session.sticky
        nodes = {node.id: node for node in settings.session.nodes}
        assert {node.host for node in nodes.values()} == set(MEMCACHED)
        assert {node.port for node in nodes.values()} == {MEMCACHED_PORT}
        own_host = host_of(compose, name)
        (failover,) = settings.session.failover
        assert host_of(compose, nodes[failover].host) == own_host
        backups = [node for node in nodes.values() if node.id != failover]
        assert [host_of(compose, node.host) for node in backups] != [own_host]


def test_the_proxy_routes_sticky_to_upstreams_named_after_the_routes(
    compose: dict[str, Any],
) -> None:
    settings = proxy_settings(compose)
    assert settings.policy == "sticky"
    apps = {name: app_settings(compose, name) for name in APPS}
    assert {spec.name for spec in settings.upstreams} == {s.jvm_route for s in apps.values()}
    for spec in settings.upstreams:
        assert spec.host in apps, "an upstream's host is the app service's name"
        assert spec.port == apps[spec.host].listen_port
        assert apps[spec.host].jvm_route == spec.name


def test_ports_and_health_checks_line_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy = proxy_settings(compose)
    assert services["proxy"]["ports"] == [f"127.0.0.1:${{PROXY_PORT:-8080}}:{proxy.listen_port}"]
    assert proxy.listen_host == "0.0.0.0", "reachable from the published port"
    assert healthcheck_url(services["proxy"]) == (
        f"http://127.0.0.1:{proxy.listen_port}{proxy.status_prefix}/status.json"
    )
    for name in APPS:
        app = app_settings(compose, name)
        assert app.listen_host == "0.0.0.0", "reachable by the proxy"
        assert healthcheck_url(services[name]) == (
            f"http://127.0.0.1:{app.listen_port}{proxy.health_path}"
        )
        assert "ports" not in services[name], "app servers are reached through the proxy only"
        needs = services[name]["depends_on"]
        assert needs == {m: {"condition": "service_healthy"} for m in MEMCACHED}
    assert services["proxy"]["depends_on"] == {a: {"condition": "service_healthy"} for a in APPS}


def test_images_and_build_arguments_come_from_the_environment(compose: dict[str, Any]) -> None:
    for name in MEMCACHED:
        service = compose["services"][name]
        assert service["image"].startswith("${MEMCACHED_IMAGE:-memcached:")
        assert all(flag.startswith("-") for flag in service["command"][::2])
    for name in ("proxy", *APPS):
        build = compose["services"][name]["build"]
        assert build["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.12-slim}",
                                 "WHEELHOUSE": "${WHEELHOUSE:-}"}
    assert compose["services"]["proxy"]["command"] == ["python", "-m", "proxy"]
    assert compose["services"]["app1"]["command"] == ["python", "-m", "appserver"]


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker-compose") is None and shutil.which("docker") is None:
        pytest.fail("docker compose is not installed: scripts/install --test installs it")
    done = run([*compose_command(), "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
               timeout=60, env={**os.environ, "PROXY_PORT": "18080"})
    assert done.returncode == 0


def megabytes(size: str) -> int:
    """A compose byte size ("96m") in MiB."""
    match = re.fullmatch(r"(\d+)([kmg])", size)
    assert match, f"not a size: {size!r}"
    return int(match[1]) * 1024 ** "kmg".index(match[2]) // 1024


def test_every_service_is_hardened(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["read_only"] is True, f"{name}: read-only root file system"
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        # Service-level limits: docker-compose v1 ignores deploy.resources without
        # --compatibility, and both v1 and v2 apply these.
        assert "deploy" not in service, name
        assert megabytes(service["mem_limit"]) > 0 and float(service["cpus"]) > 0, name
        assert int(service["pids_limit"]) > 0, name
        if name not in MEMCACHED:  # Python's tempfile needs one writable directory
            assert [t.split(":")[0] for t in service["tmpfs"]] == ["/tmp"], name
    for name in MEMCACHED:
        command = compose["services"][name]["command"]
        item_memory = int(command[command.index("-m") + 1])
        assert megabytes(compose["services"][name]["mem_limit"]) > item_memory, (
            "the limit leaves room for the hash table and connection buffers"
        )
