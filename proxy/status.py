"""The status page, its JSON and Prometheus metrics: the snapshot of the upstreams they
are rendered from, and the answers to requests under the status prefix. Pure."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxy.message import simple_response
from proxy.records import UpstreamSet

Snapshot = Mapping[str, Any]


def snapshot(upstreams: UpstreamSet, **top: Any) -> dict[str, Any]:
    """What status.json shows: every upstream and the recent events, plus `top`."""
    now = upstreams.clock()
    rows = []
    for upstream in upstreams.by_name.values():
        stats = upstream.stats
        p50 = stats.percentile(0.5)
        p99 = stats.percentile(0.99)
        up = upstream.health.available(now)
        rows.append(
            {
                "name": upstream.spec.name,
                "address": upstream.spec.address,
                "weight": upstream.spec.weight,
                "state": upstream.health.state(now),
                "up": up,
                "reason": upstream.health.reason if not up else "",
                "active": stats.active,
                "idle_connections": len(upstream.idle),
                "requests": stats.requests,
                "failures": stats.failures,
                "retries": stats.retries,
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                "history": [[round(at, 1), count] for at, count in stats.history],
            }
        )
    events = [
        {
            "time": event.at,
            "upstream": event.upstream,
            "change": event.change,
            "reason": event.reason,
            "text": event.describe(clock_text(event.at)),
        }
        for event in upstreams.events
    ]
    return {
        "policy": upstreams.settings.policy,
        "time": now,
        **top,
        "upstreams": rows,
        "events": events,
    }


class StatusPages:
    """The proxy's own answers under `status_prefix`: the page, its JSON, the metrics."""

    def __init__(self, prefix: str, current: Callable[[], Snapshot]) -> None:
        self.prefix = prefix
        self.current = current
        self._status = prefix.encode()

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
            content_type = "text/plain; version=0.0.4; charset=utf-8"
            body = render_metrics(self.current())
        elif path in (self._status + b"/status", self._status + b"/status/"):
            content_type, body = "text/html; charset=utf-8", render_html(self.prefix)
        else:
            status, content_type, body = 404, "text/plain", b"not found\n"
        response = simple_response(
            status, content_type, body, keep_alive=keep_alive, head_only=head_only
        )
        return response, keep_alive


def clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def render_json(snapshot: Snapshot) -> bytes:
    return json.dumps(snapshot, separators=(",", ":")).encode()


def _metric(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def render_metrics(snapshot: Snapshot) -> bytes:
    """Prometheus text exposition format, version 0.0.4."""
    upstreams: Sequence[Mapping[str, Any]] = snapshot["upstreams"]
    lines: list[str] = []
    series = (
        ("sessionha_proxy_upstream_up", "gauge", "1 when the upstream takes traffic", "up"),
        ("sessionha_proxy_upstream_weight", "gauge", "round robin weight", "weight"),
        ("sessionha_proxy_upstream_active", "gauge", "requests in flight", "active"),
        ("sessionha_proxy_upstream_requests_total", "counter", "requests answered", "requests"),
        ("sessionha_proxy_upstream_failures_total", "counter", "failed attempts", "failures"),
        ("sessionha_proxy_upstream_retries_total", "counter", "retries elsewhere", "retries"),
    )
    for name, kind, help_text, field in series:
        _metric(lines, name, kind, help_text)
        for upstream in upstreams:
            value = upstream[field]
            if isinstance(value, bool):
                value = int(value)
            lines.append(f'{name}{{upstream="{upstream["name"]}"}} {value}')
    _metric(lines, "sessionha_proxy_upstream_latency_seconds", "gauge", "recent latency quantiles")
    for upstream in upstreams:
        for quantile, field in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            if upstream[field] is not None:
                lines.append(
                    f'sessionha_proxy_upstream_latency_seconds{{upstream="{upstream["name"]}",'
                    f'quantile="{quantile}"}} {upstream[field] / 1000:.6f}'
                )
    _metric(lines, "sessionha_proxy_client_connections", "gauge", "open client connections")
    lines.append(f"sessionha_proxy_client_connections {snapshot['client_connections']}")
    _metric(lines, "sessionha_proxy_retries_total", "counter", "requests sent to another upstream")
    lines.append(f"sessionha_proxy_retries_total {snapshot['retries']}")
    discovery: Mapping[str, Any] | None = snapshot.get("discovery")
    if discovery is not None:
        _metric(lines, "sessionha_proxy_degraded", "gauge", "1 when DNS fails or no upstream is up")
        lines.append(f"sessionha_proxy_degraded {int(snapshot['status'] != 'ok')}")
        _metric(lines, "sessionha_proxy_resolved_addresses", "gauge", "addresses the name has")
        lines.append(f"sessionha_proxy_resolved_addresses {len(discovery['addresses'])}")
        _metric(lines, "sessionha_proxy_resolver_failures_total", "counter", "failed resolutions")
        lines.append(f"sessionha_proxy_resolver_failures_total {discovery['failures']}")
    return ("\n".join(lines) + "\n").encode()


def render_html(prefix: str) -> bytes:
    return _PAGE.replace("__JSON__", prefix + "/status.json").encode()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionha proxy</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ccc;padding:.35em .7em;text-align:right}
th{background:#eee}td:first-child,td:nth-child(2){text-align:left}
.up{color:#060;font-weight:bold}.down{color:#b00;font-weight:bold}
.checking{color:#b60;font-weight:bold}.draining,.conflict{color:#666;font-weight:bold}
#dns.degraded{color:#b00;font-weight:bold}
#log{font-family:monospace;background:#fff;border:1px solid #ccc;padding:.5em;
max-height:16em;overflow:auto;white-space:pre}
.legend span{display:inline-block;margin-right:1em}
</style></head><body>
<h1>sessionha proxy <small id="meta"></small></h1>
<p id="dns"></p>
<table><thead><tr><th>upstream</th><th>state</th><th>address</th><th>weight</th>
<th>active</th><th>requests</th><th>failures</th><th>retries</th><th>p50 ms</th>
<th>p99 ms</th></tr></thead><tbody id="rows"></tbody></table>
<h2>requests per second</h2>
<svg id="chart" width="760" height="200" style="background:#fff;border:1px solid #ccc"></svg>
<div class="legend" id="legend"></div>
<h2>events</h2><div id="log">(none yet)</div>
<script>
"use strict";
const COLORS=["#1f77b4","#d62728","#2ca02c","#ff7f0e","#9467bd","#8c564b"];
function esc(s){return String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",
'"':"&quot;"}[c]));}
function fmt(v){return v===null?"-":v.toFixed(2);}
function draw(ups){
  const svg=document.getElementById("chart"),W=760,H=200,P=30;
  let max=1,span=1;
  for(const u of ups){for(const p of u.history){max=Math.max(max,p[1]);}
    span=Math.max(span,u.history.length);}
  let out=`<text x="4" y="14" font-size="11">${max}/s</text>`+
    `<line x1="${P}" y1="${H-P}" x2="${W}" y2="${H-P}" stroke="#999"/>`+
    `<text x="${P}" y="${H-8}" font-size="11">-${span}s</text>`+
    `<text x="${W-30}" y="${H-8}" font-size="11">now</text>`;
  ups.forEach((u,i)=>{
    const n=u.history.length;
    const pts=u.history.map((p,j)=>{
      const x=P+(W-P)*(span-n+j)/Math.max(1,span-1);
      const y=(H-P)-(H-P-20)*p[1]/max;return x.toFixed(1)+","+y.toFixed(1);});
    out+=`<polyline fill="none" stroke-width="2" stroke="${COLORS[i%COLORS.length]}" `+
      `points="${pts.join(" ")}"/>`;});
  svg.innerHTML=out;
  document.getElementById("legend").innerHTML=ups.map((u,i)=>
    `<span style="color:${COLORS[i%COLORS.length]}">&#9632; ${esc(u.name)}</span>`).join("");
}
async function refresh(){
  try{
    const r=await fetch("__JSON__",{cache:"no-store"});const s=await r.json();
    document.getElementById("meta").textContent=
      `policy ${s.policy}, ${s.client_connections} client connections, ${s.retries} retries`;
    const dns=document.getElementById("dns");
    if(s.discovery){const d=s.discovery;dns.className=s.status;
      dns.textContent=`${s.status.toUpperCase()}: upstreams from ${d.target}, re-resolved `+
        `every ${d.resolver_valid}s, ${d.addresses.length} address(es)`+
        (d.problem?` \u2014 ${d.problem}`:"");}
    if(!s.upstreams.length){document.getElementById("rows").innerHTML=
      '<tr><td colspan="10" class="down">no upstreams</td></tr>';}
    else document.getElementById("rows").innerHTML=s.upstreams.map(u=>
      `<tr><td>${esc(u.name)}</td><td class="${u.state}">${u.state.toUpperCase()}`+
      `${u.reason?" ("+esc(u.reason.replace(u.state+": ",""))+")":""}</td>`+
      `<td>${esc(u.address)}</td>`+
      `<td>${u.weight}</td><td>${u.active}</td><td>${u.requests}</td><td>${u.failures}</td>`+
      `<td>${u.retries}</td><td>${fmt(u.p50_ms)}</td><td>${fmt(u.p99_ms)}</td></tr>`).join("");
    draw(s.upstreams);
    if(s.events.length){document.getElementById("log").textContent=
      s.events.slice().reverse().map(e=>e.text).join("\\n");}
  }catch(e){document.getElementById("meta").textContent="(proxy unreachable)";}
}
refresh();setInterval(refresh,1000);
</script></body></html>
"""
