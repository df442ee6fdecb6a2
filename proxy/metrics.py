"""The proxy's Prometheus metrics, rendered by prometheus_client from the status snapshot.

Names follow the exporters operators know: responses by status class and by upstream
(HAProxy's `haproxy_server_http_responses_total{code="2xx"}`), latency as a histogram
(aggregatable across replicas, unlike quantiles), bytes each way, connections accepted
and active (nginx's stub_status), plus `sessionha_build_info` and `process_*`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from settingsdoc import package_version

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_UPSTREAM_COUNTERS = (
    ("requests", "requests", "requests the upstream answered in full"),
    ("failures", "failures", "failed attempts (refused, reset, timed out, bad answer)"),
    ("retries", "retries", "requests sent on to another upstream after this one failed"),
    ("health_check_failures", "check_failures", "active health checks that failed"),
    ("sent_bytes", "sent_bytes", "bytes sent to the upstream (requests)"),
    ("received_bytes", "received_bytes", "bytes received from the upstream (responses)"),
)


class SnapshotCollector(Collector):
    """Every proxy metric, read from one status snapshot per scrape."""

    def __init__(self, current: Callable[[], Mapping[str, Any]]) -> None:
        self.current = current
        self.version = package_version()

    def collect(self) -> Iterator[Metric]:
        snapshot = self.current()
        upstreams: list[Mapping[str, Any]] = snapshot["upstreams"]
        info = GaugeMetricFamily(
            "sessionha_build_info", "sessionha version", labels=["version", "member"]
        )
        info.add_metric([self.version, "proxy"], 1)
        yield info
        up = GaugeMetricFamily(
            "sessionha_proxy_upstream_up", "1 when the upstream takes traffic", labels=["upstream"]
        )
        weight = GaugeMetricFamily(
            "sessionha_proxy_upstream_weight", "round robin weight", labels=["upstream"]
        )
        active = GaugeMetricFamily(
            "sessionha_proxy_upstream_active", "requests in flight", labels=["upstream"]
        )
        for row in upstreams:
            up.add_metric([row["name"]], 1 if row["up"] else 0)
            weight.add_metric([row["name"]], row["weight"])
            active.add_metric([row["name"]], row["active"])
        yield from (up, weight, active)
        for name, field, help_text in _UPSTREAM_COUNTERS:
            family = CounterMetricFamily(
                f"sessionha_proxy_upstream_{name}", help_text, labels=["upstream"]
            )
            for row in upstreams:
                family.add_metric([row["name"]], row[field])
            yield family
        responses = CounterMetricFamily(
            "sessionha_proxy_upstream_responses",
            "responses by status class",
            labels=["upstream", "code"],
        )
        latency = HistogramMetricFamily(
            "sessionha_proxy_upstream_response_seconds",
            "time from the request's arrival to the whole response written",
            labels=["upstream"],
        )
        for row in upstreams:
            for code, count in row["responses"].items():
                responses.add_metric([row["name"], code], count)
            histogram = row["latency"]
            buckets = [(_le(bound), count) for bound, count in histogram["buckets"]]
            latency.add_metric([row["name"]], buckets, histogram["sum"])
        yield from (responses, latency)
        yield GaugeMetricFamily(
            "sessionha_proxy_connections_active",
            "open client connections",
            value=snapshot["client_connections"],
        )
        yield CounterMetricFamily(
            "sessionha_proxy_connections_accepted",
            "client connections accepted",
            value=snapshot.get("connections_accepted", 0),
        )
        yield CounterMetricFamily(
            "sessionha_proxy_retries",
            "requests sent to another upstream",
            value=snapshot["retries"],
        )
        discovery: Mapping[str, Any] | None = snapshot.get("discovery")
        if discovery is not None:
            yield GaugeMetricFamily(
                "sessionha_proxy_degraded",
                "1 when DNS fails or no upstream is up",
                value=int(snapshot["status"] != "ok"),
            )
            yield GaugeMetricFamily(
                "sessionha_proxy_resolved_addresses",
                "addresses the name has",
                value=len(discovery["addresses"]),
            )
            yield CounterMetricFamily(
                "sessionha_proxy_resolver_failures",
                "failed resolutions",
                value=discovery["failures"],
            )


def _le(bound: float | None) -> str:
    return "+Inf" if bound is None else repr(float(bound))


class ProxyMetrics:
    """The registry `/metrics` renders: the snapshot's metrics and process_*."""

    def __init__(self, current: Callable[[], Mapping[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(current))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
