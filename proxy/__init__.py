"""The load balancer: nginx's round robin and sticky routes, health checks, retries, status.

Run one with `python -m proxy --config cluster.toml --name proxy`, or from
environment variables (`LISTEN`, `UPSTREAMS`, `POLICY`, ... every setting in
upper case). Upstreams are `name=host:port` with nginx's optional ` weight=N`.
The status dashboard is `<status_prefix>/status`, its data
`<status_prefix>/status.json`, Prometheus text `<status_prefix>/metrics`.

Layout, imports pointing down (tests/proxy/test_layering.py checks it):
    server.py         ticker, health checks, discovery, status stream, graceful close
    listeners.py      the listening sockets: plain, and ssl through tls_listener.py
    client.py         asyncio edge of a client connection + the lean request path
    request.py        requests the lean path does not take (httptools, fast path)
    response.py       ResponseRelay: responses back to the client (lean one included)
    relay.py          Relay: one connection's exchanges, upstream choice, retries
    pool.py           upstream connections: connect, keep idle, expire (aiohttp's connector)
    upstream.py       asyncio edge of an upstream connection; reports to a ResponseSink
    tls_listener.py   accepts ssl connections: plain HTTP gets a 400, h2-only ALPN an alert
                      (tls_hello.py reads the ClientHello; tls.py the contexts, SIGHUP)
    discovery.py      dns: upstreams, the loop; discovered.py applies what it finds,
                      membership.py its pure rules
    status.py         status page data, JSON and answers; status_stream.py its live
                      updates; status_page.py the page; metrics.py Prometheus
    records.py        Upstream, UpstreamSet, Exchange, Shared, ResponseSink, UpstreamLink
    pure below:       balancer, checker, cluster (the cluster view), health,
                      request_head, response_head, hop_by_hop, answers, wire, stats,
                      settings and values, edge, access_log, errors
A lean GET: client.py (request) -> wire, balancer, records -> upstream.py (response)
-> response.py (written back).
"""

from proxy.checker import check_upstream
from proxy.errors import BadRequestError, ProxyError, SettingsError
from proxy.server import ProxyServer
from proxy.settings import ProxySettings, UpstreamSpec, settings_from_toml

__all__ = (
    "BadRequestError",
    "ProxyError",
    "ProxyServer",
    "ProxySettings",
    "SettingsError",
    "UpstreamSpec",
    "check_upstream",
    "settings_from_toml",
)
