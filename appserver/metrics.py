"""GET /metrics: the app server's requests and sessionstore's statistics, for Prometheus.

Every name starts with `sessionha_` (the proxy's with `sessionha_proxy_`), so one cluster's
metrics are one prefix: `sessionha_appserver_*` for requests and sessions in memory,
`sessionha_sessionstore_*` for sessionstore's counters and its memcached nodes, plus
`sessionha_build_info` and prometheus_client's standard `process_*` and `python_*`.
Latencies are histograms (`_bucket`, `_sum`, `_count`), which add up across replicas as
quantiles cannot.

Per request the only work is RequestTracker's (a dict increment, a bucket count); everything
else (the stats snapshot, node states, the status classes, formatting) happens when /metrics
is scraped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sessionstore import SessionManager
from sessionstore.evictions import NodeEvictions
from sessionstore.stats import LATENCY_BUCKETS, Stats

from .traffic import DURATION_BUCKETS, RequestTracker

PREFIX = "sessionha_"
# backup_latency_p99: the JSON snapshot's percentiles, exported as histograms instead.
_QUANTILE = re.compile(r".+_p\d+")
# Snapshot entries that are levels, not running totals.
_GAUGE_SUFFIXES = ("_in_memory", "_active", "_pending", "_alive", "_evicting")
_HISTOGRAMS = (
    ("backup_latencies", "backup_latency", "time to write a session to its node (and its "
     "bak: copy), written ones only"),
    ("load_latencies", "load_latency", "time to load a session from memcached, found ones only"),
)


@dataclass(frozen=True, slots=True)
class NodeView:
    """One memcached node as this app server sees it."""

    id: str
    alive: bool
    memcached: NodeEvictions  # its last `stats` reading
    backups_failed: int


def node_views(manager: SessionManager) -> list[NodeView]:
    failed = manager.stats.backups_failed_by_node
    return [NodeView(node.id, node.alive, manager.node_evictions(node.id), failed.get(node.id, 0))
            for node in manager.node_status()]


class AppServerCollector(Collector):
    """Reads the live numbers at scrape time."""

    def __init__(
        self,
        *,
        version: str,
        requests: RequestTracker,
        stats: Stats,
        nodes: Callable[[], Sequence[NodeView]],
        sessions_in_memory: Callable[[], int],
    ) -> None:
        self._version = version
        self._requests = requests
        self._stats = stats
        self._nodes = nodes
        self._sessions_in_memory = sessions_in_memory

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            f"{PREFIX}build_info", "The running version; always 1", labels=["version", "member"]
        )
        build.add_metric([self._version, "appserver"], 1)
        yield build
        yield from request_metrics(self._requests)
        yield GaugeMetricFamily(
            f"{PREFIX}appserver_sessions_in_memory",
            "Sessions held in local memory",
            value=self._sessions_in_memory(),
        )
        yield from node_metrics(self._nodes())
        yield from stats_metrics(self._stats)


def request_metrics(requests: RequestTracker) -> Iterator[Metric]:
    by_status = CounterMetricFamily(
        f"{PREFIX}appserver_http_requests",
        "HTTP responses by method and status",
        labels=["method", "status"],
    )
    by_class: dict[str, int] = {}
    for (method, status), count in sorted(requests.by_method_status.items()):
        by_status.add_metric([method, str(status)], count)
        code = f"{status // 100}xx" if 100 <= status < 600 else "other"
        by_class[code] = by_class.get(code, 0) + count
    yield by_status
    responses = CounterMetricFamily(
        f"{PREFIX}appserver_http_responses",
        "HTTP responses by status class (1xx..5xx), as nginx's and HAProxy's exporters count",
        labels=["code"],
    )
    for code, count in sorted(by_class.items()):
        responses.add_metric([code], count)
    yield responses
    yield histogram(
        f"{PREFIX}appserver_http_request_duration_seconds",
        "Time from the request reaching the app to its response (handler and sessionstore)",
        DURATION_BUCKETS, requests.duration_counts, requests.duration_total,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}appserver_http_requests_in_flight", "Requests being handled now",
        value=requests.in_flight,
    )


def node_metrics(nodes: Iterable[NodeView]) -> Iterator[Metric]:
    """Per memcached node: up, what its last `stats` said, our failed backups to it. A node
    not read yet has no memcached samples (rather than zeros that look like an empty node)."""
    name = f"{PREFIX}sessionstore_node"
    up = GaugeMetricFamily(f"{name}_up", "1 when the memcached node is considered alive",
                           labels=["node"])
    evicting = GaugeMetricFamily(f"{name}_evicting", "1 while the node's memcached evictions "
                                 "grew lately: it throws session backups away", labels=["node"])
    evictions = CounterMetricFamily(f"{name}_evictions", "memcached `evictions` of the node, "
                                    "as last read", labels=["node"])
    items = GaugeMetricFamily(f"{name}_items", "memcached `curr_items` of the node, as last "
                              "read", labels=["node"])
    used = GaugeMetricFamily(f"{name}_bytes", "memcached `bytes` of the node (items stored), "
                             "as last read", labels=["node"])
    limit = GaugeMetricFamily(f"{name}_limit_bytes", "memcached `limit_maxbytes` of the node",
                              labels=["node"])
    failed = CounterMetricFamily(f"{name}_backups_failed", "Session backups to the node that "
                                 "failed", labels=["node"])
    for node in nodes:
        labels = [node.id]
        up.add_metric(labels, 1 if node.alive else 0)
        evicting.add_metric(labels, 1 if node.memcached.evicting else 0)
        failed.add_metric(labels, node.backups_failed)
        for family, value in ((evictions, node.memcached.evictions),
                              (items, node.memcached.items), (used, node.memcached.bytes),
                              (limit, node.memcached.limit_maxbytes)):
            if value is not None:
                family.add_metric(labels, value)
    yield from (up, evicting, evictions, items, used, limit, failed)


def stats_metrics(stats: Stats) -> Iterator[Metric]:
    """sessionstore's snapshot as counters (levels as gauges), its latencies as histograms,
    and where sessions were taken over from and relocated between."""
    for key, value in stats.snapshot().items():
        if _QUANTILE.fullmatch(key):
            continue
        name, documentation = f"{PREFIX}sessionstore_{key}", f"sessionstore {key.replace('_', ' ')}"
        if key.endswith(_GAUGE_SUFFIXES):
            yield GaugeMetricFamily(name, documentation, value=value)
        else:
            yield CounterMetricFamily(name, documentation, value=value)
    for attribute, series, documentation in _HISTOGRAMS:
        window = getattr(stats, attribute)
        yield histogram(f"{PREFIX}sessionstore_{series}_seconds", documentation,
                        LATENCY_BUCKETS, window.bucket_counts, window.total)
    taken_over = stats.taken_over_from
    from_route = CounterMetricFamily(
        f"{PREFIX}sessionstore_sessions_taken_over_from",
        "Sessions of another app server taken over here, by the route they had",
        labels=["route"],
    )
    for route, count in sorted(taken_over.items()):
        from_route.add_metric([route], count)
    yield from_route
    relocations = stats.relocations
    moved = CounterMetricFamily(
        f"{PREFIX}sessionstore_session_relocations",
        "Sessions moved from one memcached node to another (the first one died)",
        labels=["from_node", "to_node"],
    )
    for source, targets in sorted(relocations.items()):
        for target, count in sorted(targets.items()):
            moved.add_metric([source, target], count)
    yield moved


def histogram(name: str, documentation: str, bounds: Sequence[float], counts: Sequence[int],
              total: float) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts (the last one: above every bound)."""
    cumulative = list(accumulate(counts))
    # repr of a float is how Prometheus writes these bounds ("0.005", "1.0", "10.0").
    buckets = [(repr(float(bound)), count)
               for bound, count in zip(bounds, cumulative, strict=False)]
    buckets.append(("+Inf", cumulative[-1]))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def metrics_registry(collector: AppServerCollector) -> CollectorRegistry:
    """Ours plus prometheus_client's process (CPU, memory, file descriptors), platform and
    garbage collector collectors: the `process_*` and `python_*` every exporter has."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def serve_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return serve_metrics
