"""The status page's data and the proxy's own answers under `status_prefix`: the page,
its JSON, its live updates (server-sent events) and the Prometheus metrics. Pure but
for the event stream, which status_stream.py runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from proxy.answers import simple_response
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import ProxyMetrics
from proxy.records import Upstream, UpstreamSet
from proxy.stats import LATENCY_BUCKETS
from proxy.status_page import render_html

Snapshot = Mapping[str, Any]
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def render_json(snapshot: Snapshot) -> bytes:
    return json.dumps(snapshot, separators=(",", ":")).encode()


def _row(upstream: Upstream, now: float) -> dict[str, Any]:
    stats, health = upstream.stats, upstream.health
    p50, p99 = stats.percentile(0.5), stats.percentile(0.99)
    up = health.available(now)
    cumulative, buckets = 0, []
    for bound, count in zip((*LATENCY_BUCKETS, None), stats.buckets, strict=True):
        cumulative += count
        buckets.append([bound, cumulative])
    return {
        "name": upstream.spec.name,
        "address": upstream.spec.address,
        "weight": upstream.spec.weight,
        "state": health.state(now),
        "up": up,
        "reason": health.reason if not up else "",
        "active": stats.active,
        "idle_connections": len(upstream.idle),
        "requests": stats.requests,
        "requests_per_second": stats.history[-1][1] if stats.history else 0,
        "failures": stats.failures,
        "retries": stats.retries,
        "check_failures": stats.check_failures,
        "responses": dict(zip(_CLASSES, stats.responses[1:], strict=True)),
        "sent_bytes": stats.sent,
        "received_bytes": stats.received,
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "latency": {"buckets": buckets, "sum": stats.latency_sum, "count": cumulative},
        "history": [[round(at, 1), count] for at, count in stats.history],
    }


def _appserver(row: Mapping[str, Any], report: Mapping[str, Any] | None) -> dict[str, Any]:
    route = report.get("route") if report is not None else None
    # A server that is down says nothing now: its last report's numbers are stale.
    report = report if report is not None and row["up"] else {}

    def number(key: str) -> Any:
        value = report.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return {
        "name": row["name"],
        "state": row["state"],
        "reason": row["reason"],
        "route": route if isinstance(route, str) else None,
        "status": report.get("status") if isinstance(report.get("status"), str) else None,
        "sessions_in_memory": number("sessions_in_memory"),
        "requests_per_second": row["requests_per_second"],
        "p99_ms": row["p99_ms"],
        "sessions_taken_over": number("sessions_taken_over"),
        "sessions_relocated": number("sessions_relocated"),
        "backups_failed": number("backups_failed"),
    }


def snapshot(upstreams: UpstreamSet, **top: Any) -> dict[str, Any]:
    """What status.json shows: every upstream, the cluster as the app servers report it,
    the timeline of events and the upstreams' health log, plus `top`."""
    now = upstreams.clock()
    rows = [_row(upstream, now) for upstream in upstreams.by_name.values()]
    cluster = upstreams.cluster
    health = list(upstreams.events)
    return {
        "policy": upstreams.settings.policy,
        "time": now,
        **top,
        "upstreams": rows,
        "cluster": {
            "appservers": [_appserver(row, cluster.reports.get(row["name"])) for row in rows],
            "memcached": cluster.memcached({row["name"] for row in rows if row["up"]}),
        },
        "events": [
            {"time": event.at, "kind": event.kind, "text": event.text}
            for event in cluster.timeline(health)
        ],
        "health_log": [
            {
                "time": event.at,
                "upstream": event.upstream,
                "change": event.change,
                "reason": event.reason,
                "text": event.describe(clock_text(event.at)),
            }
            for event in health
        ],
    }


class StatusPages:
    """The proxy's own answers under `status_prefix`: the page, its JSON, the metrics.
    (`<prefix>/status/events`, the live updates, is status_stream.py's.)"""

    def __init__(self, prefix: str, current: Callable[[], Snapshot]) -> None:
        self.prefix = prefix
        self.current = current
        self.metrics = ProxyMetrics(current)
        self._status = prefix.encode()
        self.events_path = self._status + b"/status/events"

    def respond(self, method: bytes, target: bytes, keep_alive: bool) -> tuple[bytes, bool]:
        """(the whole response, whether the connection stays open)."""
        path = target.split(b"?", 1)[0]
        head_only = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            body = b"only GET and HEAD here\n"
            return simple_response(405, "text/plain", body, keep_alive=False), False
        status = 200
        if path == self._status + b"/status.json":
            content_type, body = "application/json", render_json(self.current())
        elif path == self._status + b"/metrics":
            content_type, body = METRICS_CONTENT_TYPE, self.metrics.render()
        elif path in (self._status + b"/status", self._status + b"/status/"):
            content_type, body = "text/html; charset=utf-8", render_html(self.prefix)
        else:
            status, content_type, body = 404, "text/plain", b"not found\n"
        response = simple_response(
            status, content_type, body, keep_alive=keep_alive, head_only=head_only
        )
        return response, keep_alive
