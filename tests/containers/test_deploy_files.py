"""deploy/swarm/stack.yml and deploy/k8s/*.yaml read with the project's own configuration
loaders, without an orchestrator: every environment parses, the DNS names the servers
discover each other by are the services' names, ports and probe paths line up. Every
Kubernetes object passes the Kubernetes JSON schemas (offline, kubernetes-validate), every
pod the "restricted" Pod Security Standard, and the NetworkPolicy lets only the app servers
reach memcached; the stack is hardened and spreads memcached one task per node."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from appserver.settings import AppServerSettings, known_keys
from proxy.settings import KNOWN_KEYS as PROXY_KEYS
from proxy.settings import ProxySettings, settings_from_environ

from .engine import REPO
from .network_policy import Pod, allowed, pod_of, selects
from .pod_security import restricted_violations

K8S = REPO / "deploy" / "k8s"
STACK = REPO / "deploy" / "swarm" / "stack.yml"
# What the orchestrators put where the files hold a template or a reference.
SAMPLE_POD_NAME = "app-7c9d8f6b5d-x2x7k"
SAMPLE_TASK_ID = "n0v1xq8mzwc3vbh2ut5r9e6ka"
# The oldest Kubernetes the manifests are written for (every field they use is on by
# default there) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
# The official memcached image's user: `memcache`, uid and gid 11211 (its Dockerfile).
MEMCACHED_UID = 11211


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


def workloads(k8s: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    return {name: obj for (kind, name), obj in k8s.items() if kind in ("Deployment", "StatefulSet")}


def image_user() -> tuple[int, int]:
    """The numeric uid:gid of the sessionha image's USER, read from the Dockerfile."""
    (user,) = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (REPO / "Dockerfile").read_text(), re.M)
    return int(user[0]), int(user[1])


def test_every_object_passes_the_kubernetes_schemas(k8s: dict[tuple[str, str], Any]) -> None:
    errors = []
    for (kind, name), obj in k8s.items():
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(step) for step in exc.path)
                errors.append(f"{kind}/{name} against {version}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(exc.message)
    assert not errors, "\n".join(errors)
    # Strict: a misspelt field is an error, not a field silently dropped by the API server.
    typo = copy.deepcopy(k8s[("Deployment", "app")])
    typo["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonroot"):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_pod_passes_the_restricted_pod_security_standard(
    k8s: dict[tuple[str, str], Any],
) -> None:
    found = {name: restricted_violations(workload["spec"]["template"])
             for name, workload in workloads(k8s).items()}
    assert found == {name: [] for name in found}


def test_root_file_systems_are_read_only_and_only_scratch_volumes_are_writable(
    k8s: dict[tuple[str, str], Any],
) -> None:
    for name, workload in workloads(k8s).items():
        spec = workload["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, f"{name}: no API token needed"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if "secret" in volume:  # the proxy's certificate: read, never written
                    assert set(volume) == {"name", "secret"} and mount["readOnly"] is True, mount
                    continue
                assert set(volume) == {"name", "emptyDir"}, mount
                assert "sizeLimit" in volume["emptyDir"], "bounded scratch space"
        if name != "memcached":  # Python's tempfile needs one writable directory
            mounts = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, name


def test_pods_run_as_the_numeric_users_of_their_images(k8s: dict[tuple[str, str], Any]) -> None:
    users = {"app": image_user(), "proxy": image_user(), "memcached": (MEMCACHED_UID,) * 2}
    for name, workload in workloads(k8s).items():
        context = workload["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == users[name], name
        # The kubelet refuses runAsNonRoot with a named USER unless a uid is given.
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert "runAsUser" not in container.get("securityContext", {}), "one place: the pod"


def test_memcached_replicas_spread_one_per_node(k8s: dict[tuple[str, str], Any]) -> None:
    pods = {name: pod_of(w) for name, w in workloads(k8s).items()}
    template = k8s[("StatefulSet", "memcached")]["spec"]["template"]
    spread = [c for c in template["spec"]["topologySpreadConstraints"]
              if c["topologyKey"] == "kubernetes.io/hostname"]
    assert len(spread) == 1, spread
    (constraint,) = spread
    assert constraint["maxSkew"] == 1
    assert constraint["whenUnsatisfiable"] == "DoNotSchedule", "a hard rule, not a preference"
    counted = {name for name, pod in pods.items()
               if selects(constraint["labelSelector"], pod.labels)}
    assert counted == {"memcached"}, "only memcached pods count against each other"


def test_only_the_app_servers_reach_memcached(k8s: dict[tuple[str, str], Any]) -> None:
    policies = [obj for (kind, _), obj in k8s.items() if kind == "NetworkPolicy"]
    pods = {name: pod_of(w) for name, w in workloads(k8s).items()}
    app, proxy, memcached = pods["app"], pods["proxy"], pods["memcached"]
    name, port = memcached_dns(parse_app(container_env(pod_container(k8s[("Deployment", "app")]))))
    assert pods[name] == memcached and port == memcached.ports["memcache"]
    assert allowed(policies, app, memcached, port), "the app servers' backups and /health"
    assert not allowed(policies, app, memcached, port, protocol="UDP")
    assert not allowed(policies, app, memcached, port + 1), "memcached's port, nothing else"
    assert not allowed(policies, proxy, memcached, port)
    assert not allowed(policies, memcached, memcached, port)
    stranger = Pod("debug", {"app.kubernetes.io/name": "debug"}, {})
    assert not allowed(policies, stranger, memcached, port)
    app_port = app.ports["http"]
    assert not allowed(policies, memcached, app, app_port), "memcached opens no connection"
    # Everything else is untouched: the proxy forwards to and health-checks the app
    # servers, and they and the proxy resolve names through the cluster DNS.
    assert allowed(policies, proxy, app, app_port)
    assert allowed(policies, stranger, proxy, pods["proxy"].ports["http"])
    dns = Pod("kube-dns", {"k8s-app": "kube-dns"}, {"dns": 53})
    for client in (app, proxy):
        assert allowed(policies, client, dns, 53, protocol="UDP")
        assert allowed(policies, client, dns, 53, protocol="TCP")


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


def limit_bytes(value: str) -> int:
    """A stack file's byte size ("96M") as bytes."""
    match = re.fullmatch(r"(\d+)([KMG]?)", value)
    assert match, f"not a size: {value!r}"
    return int(match[1]) * 1024 ** " KMG".index(match[2] or " ")


def test_the_stack_is_hardened(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "security_opt" not in service, "docker stack deploy ignores it: do not pretend"
        limits = service["deploy"]["resources"]["limits"]
        assert set(limits) == {"cpus", "memory", "pids"}, name
        reserved = service["deploy"]["resources"]["reservations"]
        assert limit_bytes(reserved["memory"]) <= limit_bytes(limits["memory"]), name
        if name != "memcached":
            (tmp,) = service["volumes"]
            assert tmp["type"] == "tmpfs" and tmp["target"] == "/tmp", name
    memcached = stack["services"]["memcached"]
    item_memory = int(memcached["command"][memcached["command"].index("-m") + 1])
    assert limit_bytes(memcached["deploy"]["resources"]["limits"]["memory"]) > item_memory * 2**20
    placement = memcached["deploy"]["placement"]
    assert placement["max_replicas_per_node"] == "${MEMCACHED_MAX_REPLICAS_PER_NODE:-1}"
