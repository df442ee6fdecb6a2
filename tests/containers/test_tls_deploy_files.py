"""The TLS variants of the deployments, read without Docker or Kubernetes: the compose
override and the swarm stack override merge into a proxy that listens with ssl on the
published port and reads its certificate where the secrets land (owned by the image's
USER in swarm); in Kubernetes the proxy reads the kubernetes.io/tls Secret the
kustomization makes, mounted read-only, readable through the pod's fsGroup."""

from __future__ import annotations

import os
from typing import Any

import yaml

from proxy.settings import ProxySettings

from .compose import COMPOSE_FILE, load_compose_file
from .engine import REPO
from .test_deploy_files import (
    K8S,
    STACK,
    container_env,
    image_user,
    k8s,
    named_port,
    parse_proxy,
    pod_container,
    stack_env,
)

__all__ = ("k8s",)  # the fixture, shared with test_deploy_files

COMPOSE_TLS = REPO / "docker-compose.tls.yml"
STACK_TLS = STACK.with_name("stack.tls.yml")


def merged_proxy(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The proxy service as `-f base -f override` (compose) and `-c base -c override`
    (stack deploy) merge it: mappings merged, `ports` and `secrets` appended."""
    service = dict(base["services"]["proxy"])
    for key, value in override["services"]["proxy"].items():
        if isinstance(value, dict):
            service[key] = {**service.get(key, {}), **value}
        elif isinstance(value, list):
            service[key] = [*service.get(key, []), *value]
        else:
            service[key] = value
    return service


def secret_targets(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Where each secret of a service is mounted (the short form: its name)."""
    targets = {}
    for secret in service["secrets"]:
        entry = {"source": secret} if isinstance(secret, str) else dict(secret)
        targets[f"/run/secrets/{entry.get('target', entry['source'])}"] = entry
    return targets


def check_ssl_listener(settings: ProxySettings, port: int) -> None:
    (secure,) = settings.ssl_listeners
    assert (secure.host, secure.port) == ("0.0.0.0", port)
    assert settings.listen_port == 8080, "the plain listener (and its health check) stay"


def test_the_compose_override_serves_tls_from_compose_secrets() -> None:
    override = load_compose_file(COMPOSE_TLS)
    proxy = merged_proxy(load_compose_file(COMPOSE_FILE), override)
    settings = parse_proxy({str(k): str(v) for k, v in proxy["environment"].items()})
    check_ssl_listener(settings, 8443)
    assert "127.0.0.1:${PROXY_TLS_PORT:-8443}:8443" in proxy["ports"]
    targets = secret_targets(proxy)
    assert set(targets) == {settings.ssl_certificate, settings.ssl_certificate_key}
    files = {name: secret["file"] for name, secret in override["secrets"].items()}
    assert files == {
        "proxy_certificate": "${TLS_CERTIFICATE:-./certs/cert.pem}",
        "proxy_certificate_key": "${TLS_CERTIFICATE_KEY:-./certs/key.pem}",
    }
    # What scripts/make-certificate writes, at the path the override defaults to.
    make = (REPO / "scripts" / "make-certificate").read_text()
    assert "dir=${1:-certs}" in make and '"$dir/cert.pem"' in make and '"$dir/key.pem"' in make
    assert os.access(REPO / "scripts" / "make-certificate", os.X_OK)


def test_the_stack_override_serves_tls_from_swarm_secrets_owned_by_the_image_user() -> None:
    base = yaml.safe_load(STACK.read_text())
    override = yaml.safe_load(STACK_TLS.read_text())
    proxy = merged_proxy(base, override)
    settings = parse_proxy(stack_env(proxy))
    check_ssl_listener(settings, 8443)
    published = [port for port in proxy["ports"] if port["target"] == 8443]
    assert published == [
        {"target": 8443, "published": "${PROXY_TLS_PORT:-8443}", "protocol": "tcp", "mode": "host"}
    ]
    targets = secret_targets(proxy)
    assert set(targets) == {settings.ssl_certificate, settings.ssl_certificate_key}
    uid, gid = image_user()
    for secret in targets.values():
        assert (int(secret["uid"]), int(secret["gid"])) == (uid, gid)
    assert targets[settings.ssl_certificate_key]["mode"] == 0o400, "the key: its owner only"
    assert all(secret == {"external": True} for secret in override["secrets"].values())
    assert set(override["secrets"]) == {secret["source"] for secret in targets.values()}


def test_the_k8s_proxy_serves_tls_from_the_kubernetes_tls_secret(
    k8s: dict[tuple[str, str], Any],
) -> None:
    workload = k8s[("Deployment", "proxy")]
    container = pod_container(workload)
    settings = parse_proxy(container_env(container))
    check_ssl_listener(settings, named_port(container, "https"))
    spec = workload["spec"]["template"]["spec"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    assert settings.ssl_certificate == f"{mount['mountPath']}/tls.crt"
    assert settings.ssl_certificate_key == f"{mount['mountPath']}/tls.key"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["defaultMode"] == 0o440, "group-readable, not world-readable"
    assert spec["securityContext"]["fsGroup"] == image_user()[1]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["name"] == volume["secret"]["secretName"]
    assert generator["type"] == "kubernetes.io/tls"
    assert {entry.partition("=")[0] for entry in generator["files"]} == {"tls.crt", "tls.key"}
    service = k8s[("Service", "proxy")]
    assert {"name": "https", "port": 8443, "targetPort": "https"} in service["spec"]["ports"]
