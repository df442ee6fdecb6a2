"""deploy/grafana/sessionha.json and deploy/prometheus/*: the dashboard asks only for series
the members export, and the scrape configs reach the ports and paths the deploy files give
the members."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appserver import AppServerSettings
from proxy.settings import ProxySettings

from .observed import Observed, observe
from .processes import REPO
from .scrape import exported_names

DASHBOARD = REPO / "deploy" / "grafana" / "sessionha.json"
PROMETHEUS = REPO / "deploy" / "prometheus"
# What the proxy exports (proxy/metrics.py), by the names the issue gives them.
PROXY_SERIES = frozenset({
    "sessionha_proxy_upstream_up",
    "sessionha_proxy_upstream_requests_total",
    "sessionha_proxy_upstream_responses_total",
    "sessionha_proxy_upstream_response_seconds_bucket",
    "sessionha_proxy_connections_active",
    "sessionha_proxy_connections_accepted_total",
    "sessionha_proxy_upstream_sent_bytes_total",
    "sessionha_proxy_upstream_received_bytes_total",
    "sessionha_proxy_upstream_failures_total",
    "sessionha_proxy_upstream_health_check_failures_total",
    "sessionha_build_info",
})
SERIES = re.compile(r"\b(?:sessionha|process|python)_\w+")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    yield from observe(tmp_path_factory)


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panels' targets and variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_the_dashboard_asks_only_for_series_the_members_export(observed: Observed) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard) for name in SERIES.findall(expr)}
    exported = exported_names(observed.metrics) | PROXY_SERIES
    assert not used - exported, sorted(used - exported)
    # Every part of the cluster is on it: proxy, app servers, memcached nodes.
    for wanted in ("sessionha_proxy_upstream_up", "sessionha_appserver_http_responses_total",
                   "sessionha_sessionstore_node_up", "sessionha_sessionstore_node_bytes"):
        assert wanted in used, wanted


def test_every_panel_says_its_unit_and_uses_the_chosen_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels and len({panel["id"] for panel in dashboard["panels"]}) == len(
        dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        if panel["type"] != "table":
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["description"], panel["title"]
        if panel["type"] == "timeseries":
            # Stacked, or lines of their own: no series hides behind another.
            stacking = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"]
            assert stacking in ("normal", "none")
    names = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert names[0] == "datasource"


# --- scrape configs --------------------------------------------------------------------


def prometheus_config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS / name).read_text())
    return config


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"sessionha-appserver", "sessionha-proxy"}
    assert jobs["sessionha-appserver"]["metrics_path"] == "/metrics"
    assert jobs["sessionha-proxy"]["metrics_path"] == proxy_metrics_path({})
    return jobs


def proxy_metrics_path(env: dict[str, str]) -> str:
    [prefix] = [f.default for f in dataclasses.fields(ProxySettings) if f.name == "status_prefix"]
    return f"{env.get('STATUS_PREFIX', prefix)}/metrics"


def first_listen_port(listen: str) -> int:
    """The port of a LISTEN value's first address ("0.0.0.0:8080,0.0.0.0:8443 ssl")."""
    return int(listen.split(",")[0].split()[0].rpartition(":")[2])


def test_the_compose_scrape_config_targets_every_member_on_its_port() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    expected = {f"{name}:{AppServerSettings.from_environ(compose[name]['environment']).listen_port}"
                for name in compose if compose[name].get("command") == ["python", "-m",
                                                                        "appserver"]}
    assert expected == {"app1:8000", "app2:8000"}
    proxy_env = compose["proxy"]["environment"]
    config = jobs(prometheus_config("compose.yml"))
    apps = {target for group in config["sessionha-appserver"]["static_configs"]
            for target in group["targets"]}
    assert apps == expected
    [proxy] = [target for group in config["sessionha-proxy"]["static_configs"]
               for target in group["targets"]]
    assert proxy == f"proxy:{first_listen_port(proxy_env['LISTEN'])}"
    assert proxy_metrics_path(proxy_env) == "/_proxy/metrics"


def test_the_swarm_scrape_config_finds_the_tasks_by_dns() -> None:
    stack = yaml.safe_load((REPO / "deploy" / "swarm" / "stack.yml").read_text())["services"]
    config = jobs(prometheus_config("swarm.yml"))
    for job, service in (("sessionha-appserver", "app"), ("sessionha-proxy", "proxy")):
        [sd] = config[job]["dns_sd_configs"]
        assert sd["names"] == [f"tasks.{service}"] and sd["type"] == "A"
        assert stack[service]["deploy"]["endpoint_mode"] == "dnsrr"  # one address per task
        assert sd["port"] == first_listen_port(stack[service]["environment"]["LISTEN"])


def test_the_k8s_config_map_keeps_the_pods_by_label_and_port_name() -> None:
    [config_map] = yaml.safe_load_all((PROMETHEUS / "k8s.yaml").read_text())
    assert config_map["kind"] == "ConfigMap"
    config = jobs(yaml.safe_load(config_map["data"]["prometheus.yml"]))
    workloads = {}
    for path in (REPO / "deploy" / "k8s").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == "Deployment":
                workloads[document["metadata"]["name"]] = document
    for job, name in (("sessionha-appserver", "app"), ("sessionha-proxy", "proxy")):
        keep = {rule["source_labels"][0]: rule["regex"]
                for rule in config[job]["relabel_configs"] if rule.get("action") == "keep"}
        template = workloads[name]["spec"]["template"]
        label = template["metadata"]["labels"]["app.kubernetes.io/name"]
        assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == label
        [container] = template["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        port_name = keep["__meta_kubernetes_pod_container_port_name"]
        env = {item["name"]: item.get("value", "") for item in container["env"]}
        assert ports[port_name] == first_listen_port(env["LISTEN"])


def test_the_prometheus_files_are_the_ones_checked_here() -> None:
    assert sorted(path.name for path in PROMETHEUS.iterdir()) == [
        "compose.yml", "k8s.yaml", "swarm.yml"]
    assert [path.name for path in Path(DASHBOARD).parent.iterdir()] == ["sessionha.json"]
