"""deploy/swarm/stack.yml and deploy/k8s/*.yaml read with the project's own configuration
loaders, without an orchestrator: every environment parses, the DNS names the servers
discover each other by are the services' names, ports and probe paths line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from appserver.settings import AppServerSettings, known_keys
from proxy.settings import KNOWN_KEYS as PROXY_KEYS
from proxy.settings import ProxySettings, settings_from_environ

from .engine import REPO

K8S = REPO / "deploy" / "k8s"
STACK = REPO / "deploy" / "swarm" / "stack.yml"
# What the orchestrators put where the files hold a template or a reference.
SAMPLE_POD_NAME = "app-7c9d8f6b5d-x2x7k"
SAMPLE_TASK_ID = "n0v1xq8mzwc3vbh2ut5r9e6ka"


def parse_app(env: dict[str, str]) -> AppServerSettings:
    unknown = {key for key in env if key.lower() not in known_keys()}
    assert not unknown, f"variables the app server does not read: {unknown}"
    return AppServerSettings.from_environ(env)


def parse_proxy(env: dict[str, str]) -> ProxySettings:
    unknown = {key for key in env if key.lower() not in PROXY_KEYS}
    assert not unknown, f"variables the proxy does not read: {unknown}"
    return settings_from_environ(env)


def memcached_dns(settings: AppServerSettings) -> tuple[str, int]:
    """The name and port the app server discovers memcached nodes by, as its loader read them."""
    discovery = settings.session.discovery
    assert discovery is not None, "memcached nodes are discovered through DNS"
    return discovery.name, discovery.port


def upstream_dns(settings: ProxySettings) -> tuple[str, int]:
    """The name and port the proxy discovers app servers by, as its loader read them."""
    assert settings.discovery is not None, "upstreams are discovered through DNS"
    assert not settings.upstreams, "no static upstreams beside the DNS name"
    return settings.discovery.name, settings.discovery.port


# --- Kubernetes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of deploy/k8s by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = document
    return objects


def pod_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, item
            env[item["name"]] = SAMPLE_POD_NAME
    return env


def named_port(container: dict[str, Any], port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_services_select_their_pods_and_ports_exist(k8s: dict[tuple[str, str], Any]) -> None:
    workloads = {name: obj for (kind, name), obj in k8s.items()
                 if kind in ("Deployment", "StatefulSet")}
    assert set(workloads) == {"app", "memcached", "proxy"}
    for name, workload in workloads.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = k8s[("Service", name)]
        assert service["spec"]["selector"].items() <= labels.items()
        container = pod_container(workload)
        for port in service["spec"]["ports"]:
            named_port(container, port["targetPort"])
        budget = k8s[("PodDisruptionBudget", name)]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s[("StatefulSet", "memcached")]["spec"]["serviceName"] == "memcached"


def test_the_app_servers_parse_and_find_memcached_through_the_headless_service(
    k8s: dict[tuple[str, str], Any],
) -> None:
    container = pod_container(k8s[("Deployment", "app")])
    env = container_env(container)
    settings = parse_app(env)
    assert settings.jvm_route == SAMPLE_POD_NAME, "each pod's route is its own name"
    assert settings.listen_port == named_port(container, "http")
    name, port = memcached_dns(settings)
    service = k8s[("Service", name)]
    assert service["spec"]["clusterIP"] == "None", "headless: DNS gives every pod's address"
    assert port in {p["port"] for p in service["spec"]["ports"]}
    memcached = pod_container(k8s[("StatefulSet", name)])
    assert port == named_port(memcached, "memcache")
    assert all(flag.startswith("-") for flag in memcached["args"][::2])
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"
        assert named_port(container, check["port"]) == settings.listen_port


def test_the_proxy_parses_and_finds_the_app_servers_through_the_headless_service(
    k8s: dict[tuple[str, str], Any],
) -> None:
    container = pod_container(k8s[("Deployment", "proxy")])
    env = container_env(container)
    settings = parse_proxy(env)
    assert settings.policy == "sticky"
    assert settings.listen_port == named_port(container, "http")
    name, port = upstream_dns(settings)
    assert k8s[("Service", name)]["spec"]["clusterIP"] == "None"
    app = pod_container(k8s[("Deployment", name)])
    assert port == parse_app(container_env(app)).listen_port
    assert settings.health_path == app["readinessProbe"]["httpGet"]["path"]
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == f"{settings.status_prefix}/status.json"
        assert named_port(container, check["port"]) == settings.listen_port


# --- Docker Swarm ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    data = yaml.safe_load(Path(STACK).read_text())
    assert isinstance(data, dict)
    return data


def stack_env(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v).replace("{{.Task.ID}}", SAMPLE_TASK_ID)
            for k, v in service["environment"].items()}


def test_the_stack_discovers_tasks_through_dns(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == {"proxy", "app", "memcached"}
    for service in services.values():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", "no IPVS here: no virtual IPs"
    app = parse_app(stack_env(services["app"]))
    assert app.jvm_route.endswith(SAMPLE_TASK_ID), "every task has a route of its own"
    assert memcached_dns(app) == ("tasks.memcached", 11211)
    proxy = parse_proxy(stack_env(services["proxy"]))
    assert upstream_dns(proxy) == ("tasks.app", app.listen_port)
    (published,) = services["proxy"]["ports"]
    assert published["mode"] == "host" and published["target"] == proxy.listen_port
    assert services["app"]["deploy"]["update_config"]["parallelism"] == 1
