"""GET /metrics: sessionstore statistics and request counts in Prometheus text format.

Per request the only work is one dict increment in RequestTracker; everything else
(the stats snapshot, node states, formatting) happens when /metrics is scraped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .traffic import RequestTracker

# backup_latency_p99 -> ("backup_latency", "0.99")
_QUANTILE = re.compile(r"(.+)_p(\d+)")
# Snapshot entries that are levels, not running totals.
_GAUGE_SUFFIXES = ("_in_memory", "_active", "_pending", "_alive", "_evicting")


class AppServerCollector(Collector):
    """Reads the live numbers at scrape time."""

    def __init__(
        self,
        *,
        requests: RequestTracker,
        stats: Callable[[], Mapping[str, int | float]],
        nodes: Callable[[], list[tuple[str, bool]]],
        sessions_in_memory: Callable[[], int],
    ) -> None:
        self._requests = requests
        self._stats = stats
        self._nodes = nodes
        self._sessions_in_memory = sessions_in_memory

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "appserver_http_requests",
            "HTTP responses by method and status",
            labels=["method", "status"],
        )
        for (method, status), count in sorted(self._requests.by_method_status.items()):
            requests.add_metric([method, str(status)], count)
        yield requests
        yield GaugeMetricFamily(
            "appserver_sessions_in_memory",
            "Sessions held in local memory",
            value=self._sessions_in_memory(),
        )
        nodes = GaugeMetricFamily(
            "sessionstore_node_up", "1 when the memcached node is considered alive", labels=["node"]
        )
        for node_id, alive in self._nodes():
            nodes.add_metric([node_id], 1 if alive else 0)
        yield nodes
        yield from stats_metrics(self._stats())


def stats_metrics(snapshot: Mapping[str, int | float]) -> Iterator[Metric]:
    """sessionstore's snapshot as metrics: *_pNN as quantile gauges, the rest as counters."""
    quantiles: dict[str, GaugeMetricFamily] = {}
    for key, value in snapshot.items():
        match = _QUANTILE.fullmatch(key)
        if match is not None:
            name = f"sessionstore_{match[1]}_seconds"
            if name not in quantiles:
                quantiles[name] = GaugeMetricFamily(
                    name, f"sessionstore {match[1].replace('_', ' ')}", labels=["quantile"]
                )
            quantiles[name].add_metric([f"0.{match[2]}"], float(value))
        elif key.endswith(_GAUGE_SUFFIXES):
            yield GaugeMetricFamily(f"sessionstore_{key}", f"sessionstore {key}", value=value)
        else:
            yield CounterMetricFamily(f"sessionstore_{key}", f"sessionstore {key}", value=value)
    yield from quantiles.values()


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def serve_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return serve_metrics
