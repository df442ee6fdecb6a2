"""The load balancer: nginx's round robin and sticky routes, health checks, retries, status.

Run one with `python -m proxy --config cluster.toml --name proxy`, or from
environment variables (`LISTEN`, `UPSTREAMS`, `POLICY`, ... every setting in
upper case). Upstreams are `name=host:port` with nginx's optional ` weight=N`.
The status dashboard is `<status_prefix>/status`, its data
`<status_prefix>/status.json`, Prometheus text `<status_prefix>/metrics`.
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
